"""The package's layers: imports point down only, and the command line builds its help without heavy libraries."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hf_ddpm
from hf_ddpm import _choices

SRC = Path(hf_ddpm.__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "gradio")


def imported_modules(path: Path) -> set[str]:
    """The absolute names of the modules a source file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.level and node.module else base if node.level else node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import cli`
    return names


# The package's layers, lowest first: a module imports from its own unit (a module, or a subpackage) or from a lower
# layer, never from its own layer or above (the command line, at the top, is imported by nothing).
LAYERS = [
    {"_errors", "_choices", "_lazy", "_digits", "images"},  # import nothing of hf_ddpm
    {"__init__", "_devices", "_datasets", "files"},  # UsageError; the package's lazy names
    {"scheduling_ddpm_posterior", "unet_2d_adm"},  # the diffusers components the pipeline holds
    {"pipeline_ddpm_posterior"},
    {"sampling", "hub", "convert"},  # convert writes pipeline folders
    {"evaluation", "training"},  # evaluation draws samples with `sampling`; training publishes with `hub`
    {"analytic"},  # reads data as `hf-ddpm eval` does
    {"cli"},
]
LAYER = {unit: index for index, units in enumerate(LAYERS) for unit in units}


def test_imports_point_down_the_layers():
    upward = []
    for path in sorted((SRC / "hf_ddpm").rglob("*.py")):
        unit = path.relative_to(SRC / "hf_ddpm").with_suffix("").parts[0]
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "hf_ddpm" and len(parts) > 1 and parts[1] in LAYER and parts[1] != unit:
                if LAYER[parts[1]] >= LAYER[unit]:
                    upward.append(f"{path.relative_to(SRC)} imports {name}")
    assert sorted(set(LAYER)) == sorted(
        path.stem if path.is_file() else path.name
        for path in (SRC / "hf_ddpm").iterdir()
        if path.suffix == ".py" or (path / "__init__.py").exists()
    ), "a module without a layer: add it to LAYERS"
    assert upward == []


def test_usage_error_keeps_its_old_import_path():
    from hf_ddpm._errors import UsageError
    from hf_ddpm.cli import UsageError as cli_usage_error

    assert cli_usage_error is UsageError and issubclass(UsageError, ValueError)


# Prints `hf-ddpm --help` and every `hf-ddpm <cmd> --help`, then lists the heavy libraries loaded.
HELP_DRIVER = """
import contextlib, io, json, sys
from hf_ddpm.cli import build_parser

parser = build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)
texts = {}
for argv in [[], *([command] for command in commands)]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    texts[" ".join(argv)] = out.getvalue()
heavy = sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[1].split(","))
print(json.dumps({"commands": commands, "texts": texts, "heavy": heavy}))
"""


def test_help_of_every_command_imports_no_heavy_library():
    result = subprocess.run(
        [sys.executable, "-c", HELP_DRIVER, ",".join(HEAVY)], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout)
    assert set(report["commands"]) >= {"train", "sample", "eval", "push", "pull", "card", "push-space"}
    for command, text in report["texts"].items():
        assert f"usage: hf-ddpm {command}".rstrip() in text and "Example" in text, command
    assert report["heavy"] == []


def test_package_names_load_on_first_use():
    from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
    from hf_ddpm.pipeline_ddpm_posterior import DDPMPosteriorPipeline as pipeline_class
    from hf_ddpm.scheduling_ddpm_posterior import DDPMPosteriorScheduler as scheduler_class

    assert DDPMPosteriorPipeline is pipeline_class and DDPMPosteriorScheduler is scheduler_class
    assert set(hf_ddpm.__all__) <= set(dir(hf_ddpm))
    assert all(getattr(hf_ddpm, name) is not None for name in hf_ddpm.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        hf_ddpm.Nothing  # noqa: B018


def test_option_values_listed_without_torch_equal_their_sources():
    from diffusers.optimization import SchedulerType

    from hf_ddpm import scheduling_ddpm_posterior as scheduler
    from hf_ddpm.training import losses

    assert _choices.VARIANCE_TYPES == scheduler.VARIANCE_TYPES
    assert _choices.LEARNED_VARIANCE_TYPES == scheduler.LEARNED_VARIANCE_TYPES
    assert _choices.PREDICTION_TYPES == scheduler.PREDICTION_TYPES
    assert _choices.LR_SCHEDULERS == tuple(member.value for member in SchedulerType)
    assert losses.LOSS_TYPES is _choices.LOSS_TYPES
