"""`hf-ddpm`: help on every subcommand, `sample` outputs, exit codes and one-line errors, the README's commands."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from hf_ddpm.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ["train", "sample", "eval", "analytic", "push", "pull", "card", "push-space", "convert"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"hf-ddpm {command}" in out and "Example" in out


def test_console_script_runs_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "hf_ddpm.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and all(command in result.stdout for command in SUBCOMMANDS)
    result = subprocess.run([sys.executable, "-m", "hf_ddpm.cli", "sample"], capture_output=True, text=True)
    assert result.returncode == 2 and "model" in result.stderr


@pytest.fixture
def saved_pipeline(tiny_pipeline, tmp_path):
    folder = tmp_path / "model"
    tiny_pipeline.save_pretrained(str(folder))
    return folder


def test_sample_writes_grid_pngs_npz_and_trajectory(saved_pipeline, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "sample", str(saved_pipeline), "--num_images", "5", "--batch_size", "3", "--num_inference_steps", "10",
        "--trajectory", "--trajectory_frames", "6", "--output_dir", str(out), "--seed", "7",
    ]  # fmt: skip
    assert main(argv) == 0
    paths = json.loads(capsys.readouterr().out)
    images = np.load(paths["npz"])["images"]
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
    assert sorted(os.listdir(paths["images"])) == [f"{i:05d}.png" for i in range(5)]
    np.testing.assert_array_equal(
        np.asarray(PIL.Image.open(os.path.join(paths["images"], "00003.png"))), images[3, ..., 0]
    )
    grid = PIL.Image.open(paths["grid"])
    # 3 x 2 tiles of 8x8 zoomed 8x to 64x64, with 1-pixel gaps
    assert grid.size == (3 * 64 + 4, 2 * 64 + 3)
    animation = PIL.Image.open(paths["trajectory"])
    assert animation.n_frames == 6 + 1  # the recorded steps, then the final samples
    # the same seed and batch size give the same images
    assert main([*argv[:-4], "--output_dir", str(tmp_path / "again"), "--seed", "7", "--no_individual"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "samples.npz")["images"], images)
    assert not (tmp_path / "again" / "images").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_inference_steps", "51"], "exceeds the 50 steps"),
        (["--device", "cuda"], "no CUDA device"),
        (["--dtype", "float16", "--device", "cpu"], "float16 is not supported on the CPU"),
        (["--variance_type", "learned_range"], "does not output variances"),
    ],
)
def test_sample_refuses_impossible_requests_before_any_work(saved_pipeline, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["sample", str(saved_pipeline), "--output_dir", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_sample_on_missing_corrupt_or_foreign_folders_fails_in_one_line(saved_pipeline, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nowhere")]) == 2  # a path argument that does not exist: bad usage
    assert "No such folder" in capsys.readouterr().err
    (saved_pipeline / "model_index.json").write_text("{")
    assert main(["sample", str(saved_pipeline)]) == 1
    err = capsys.readouterr().err
    assert "model_index.json' is not a valid JSON file" in err and len(err.strip().splitlines()) == 1
    (saved_pipeline / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    assert main(["sample", str(saved_pipeline)]) == 1
    assert "scheduler" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_ddpm.cli", "--debug", "sample", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" in result.stderr


def _readme_commands():
    """The two fresh-machine commands: the first two ```bash blocks of the README's first section."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_the_readmes_test_command_verbatim():
    main_job, test_command = _readme_commands()
    assert "pytest" in test_command and "train" in main_job
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci_script


@pytest.mark.slow
def test_readmes_main_command_runs_as_written(tmp_path):
    """The README's first command after its set-up (train, then sample), verbatim but for one flag that makes the
    training short, in an empty folder holding only train.py: each step worked alone while the two together failed."""
    main_job, _ = _readme_commands()
    steps = main_job.split(" && ")
    setup = ("python3 -m venv ", ". .venv/bin/activate", "pip install ")
    commands = [step for step in steps if not step.startswith(setup)]
    assert commands[0] == "accelerate launch train.py" and commands[1].startswith("hf-ddpm sample ")
    commands[0] += " --max_train_steps 500"  # the first sample grid and checkpoint of the 2,500 steps
    (tmp_path / "train.py").write_bytes((ROOT / "train.py").read_bytes())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(" && ".join(commands), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = tmp_path / "outputs" / "ddpm-digits" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["grid.png", "images", "samples.npz", "trajectory.gif"]
    assert len(list((samples / "images").iterdir())) == 64


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every `hf-ddpm ...` and `accelerate launch ... train.py ...` command of the README's and docs' bash blocks."""
    commands = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for command in line.split("&&"):
                    words = shlex.split(command, comments=True)
                    if words and not any("$" in word for word in words):  # $MODEL_FLAGS: the docs' table gives them
                        if words[0] == "hf-ddpm" or (words[0] == "accelerate" and "train.py" in words):
                            commands.append((path.name, words))
    return commands


def test_every_documented_command_parses(tmp_path, monkeypatch):
    """A flag renamed or removed in the code but not in the docs fails here, not on a reader's machine."""
    from hf_ddpm.training import parse_args

    commands = _documented_commands()
    assert len(commands) > 30
    monkeypatch.chdir(tmp_path)
    for where, words in commands:
        if "--train_data_dir" in words:  # the reader's own images: a folder that must exist
            os.makedirs(words[words.index("--train_data_dir") + 1], exist_ok=True)
        try:
            if words[0] == "hf-ddpm":
                build_parser().parse_args(words[1:])
            else:
                parse_args(words[words.index("train.py") + 1 :])
        except SystemExit as error:
            assert error.code == 0, f"{where}: {' '.join(words)}"


def test_parser_lists_subcommands_in_journey_order():
    parser = build_parser()
    choices = list(parser._subparsers._group_actions[0].choices)
    assert choices == SUBCOMMANDS


@pytest.mark.parametrize(
    "flag, value, allowed",
    [
        ("--scale", "-2", "must be an integer in [1, 64], got '-2'"),
        ("--scale", "100000", "must be an integer in [1, 64]"),
        ("--seed", "1e20", "must be an integer in [0, 9223372036854775807]"),
        ("--seed", str(10**20), "must be an integer in [0, 9223372036854775807]"),
        ("--seed", "-1", "must be an integer in [0, 9223372036854775807]"),
        ("--num_images", "0", "must be an integer >= 1, got '0'"),
        ("--batch_size", "0", "must be an integer >= 1"),
        ("--num_inference_steps", "0", "must be an integer >= 1"),
        ("--trajectory_frames", "1", "must be an integer >= 2"),
        ("--device", "tpu", "invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda', 'mps')"),
        ("--dtype", "float64", "invalid choice: 'float64'"),
        ("--variance_type", "wide", "invalid choice: 'wide' (choose from 'fixed_small'"),
    ],
)
def test_sample_refuses_values_out_of_their_range_naming_the_flag(
    saved_pipeline, tmp_path, capsys, flag, value, allowed
):
    """argparse's own `type=` and `choices=`: usage, then one line naming the flag and what it allows; exit 2."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(saved_pipeline), "--output_dir", str(out), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"argument {flag}: {allowed}" in err.strip().splitlines()[-1]
    assert not out.exists()


def _sample_argv(model, out, *extra):
    return ["sample", str(model), "--num_inference_steps", "3", "--output_dir", str(out), *extra]


def test_sample_refuses_a_non_empty_output_dir_and_replaces_it_whole_when_asked(saved_pipeline, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(_sample_argv(saved_pipeline, out, "--num_images", "5", "--trajectory", "--trajectory_frames", "2")) == 0
    )
    first = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert len(first) == 5 + 3  # 5 PNGs, the grid, the npz and the GIF
    capsys.readouterr()
    # a second run into the same folder: refused before any work, the first run's files untouched
    assert main(_sample_argv(saved_pipeline, out, "--num_images", "2", "--no_individual")) == 2
    err = capsys.readouterr().err
    assert "--overwrite_output_dir" in err and len(err.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == first
    # asked to replace it: nothing of the first run remains beside the new outputs
    argv = _sample_argv(saved_pipeline, out, "--num_images", "2", "--no_individual", "--overwrite_output_dir")
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["grid.png", "samples.npz"]
    assert np.load(out / "samples.npz")["images"].shape[0] == 2
    assert sorted(os.listdir(tmp_path)) == ["model", "out"]  # no staging or old folder left behind
    # an existing empty folder is fine
    (tmp_path / "empty").mkdir()
    assert main(_sample_argv(saved_pipeline, tmp_path / "empty", "--num_images", "1", "--no_individual")) == 0


def test_a_sample_run_that_fails_mid_write_leaves_no_output_folder(saved_pipeline, tmp_path, capsys, monkeypatch):
    save = PIL.Image.Image.save

    def disk_full_on_gif(image, path, *args, **kwargs):
        if str(path).endswith(".gif"):
            raise OSError("No space left on device")
        return save(image, path, *args, **kwargs)

    # the grid, the npz and the PNGs are written; the GIF fails
    monkeypatch.setattr(PIL.Image.Image, "save", disk_full_on_gif)
    out = tmp_path / "out"
    assert (
        main(_sample_argv(saved_pipeline, out, "--num_images", "2", "--trajectory", "--trajectory_frames", "2")) == 1
    )
    assert "No space left" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["model"]  # neither a half-written out/ nor a staging folder


def test_sample_takes_every_variance_type_that_eval_takes(saved_pipeline, tmp_path, capsys):
    """`sample` and `eval` share one override: all six types (before, `sample` refused the `_log` and `learned`)."""
    assert main(_sample_argv(saved_pipeline, tmp_path / "small", "--num_images", "2", "--no_individual")) == 0
    argv = _sample_argv(saved_pipeline, tmp_path / "log", "--num_images", "2", "--no_individual")
    assert main([*argv, "--variance_type", "fixed_large_log"]) == 0
    small, large_log = (np.load(tmp_path / name / "samples.npz")["images"] for name in ("small", "log"))
    assert small.shape == large_log.shape and not np.array_equal(small, large_log)  # another reverse variance
    assert main(_sample_argv(saved_pipeline, tmp_path / "learned", "--variance_type", "learned")) == 2
    assert "does not output variances" in capsys.readouterr().err


def _files(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    "output_dir, holds",
    [
        ("", "the current folder"),
        (".", "the current folder"),
        ("..", "the current folder"),
        ("{home}", "the home folder"),
        ("{model}", "the input"),
        ("{model}/..", "the input"),
        ("/", "the current folder"),
    ],
)
def test_sample_refuses_an_output_dir_that_is_or_holds_the_cwd_the_home_or_the_model(
    saved_pipeline, tmp_path, monkeypatch, capsys, output_dir, holds
):
    """`--output_dir ""` replaced the current folder (every file in it deleted, exit 0): an output folder that is or
    holds the current folder, the home folder or the model is refused before any work, in one line naming the flag."""
    work, home, model = tmp_path / "work", tmp_path / "home", tmp_path / "models" / "model"
    os.renames(saved_pipeline, model)  # under a folder of its own: models/ holds the model only
    for folder in (work, home):
        folder.mkdir()
        (folder / "thesis.tex").write_text("a user's file")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    before = _files(tmp_path)
    output_dir = output_dir.format(home=home, model=model)
    argv = ["sample", str(model), "--num_images", "1", "--num_inference_steps", "2", "--output_dir", output_dir]
    # --overwrite_output_dir lets a non-empty folder through the other guard; never for "/" (in case the guard fails)
    assert main(argv + (["--overwrite_output_dir"] if output_dir != "/" else [])) == 2
    err = capsys.readouterr().err
    assert f"--output_dir {output_dir!r}" in err and f"holds {holds}" in err and len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["home", "models", "work"]
