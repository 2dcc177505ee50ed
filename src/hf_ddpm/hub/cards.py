# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Model cards: `save_model_card` renders README.md from the training args, metrics and configs of a folder."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .._choices import LEARNED_VARIANCE_TYPES
from ..files import atomic_write_text, read_json_object
from ._commit import check_repo_id
from ._scan import known_tokens, redact

TEMPLATE_PATH = Path(__file__).parent.parent / "templates" / "model_card.md"
# The first line of the body of a card rendered here: push regenerates such cards, and keeps any card without it.
GENERATED_MARKER = (
    "<!-- hf-ddpm:generated-card (rendered by `hf-ddpm card`; delete this line to keep your edits when pushing) -->"
)
LICENSE_DEFAULT = "apache-2.0"
TASK = "unconditional-image-generation"
SECRET_KEY_RE = re.compile(r"token|secret|password|passwd|credential|api_key", re.IGNORECASE)
UNET_KEYS = ("sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block")
SCHEDULER_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "variance_type", "prediction_type")
SCHEDULER_KEYS += ("clip_sample", "timestep_spacing")


def save_model_card(
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    license: str = LICENSE_DEFAULT,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """
    Render the model card of a saved pipeline and write it to `folder/README.md`.

    Reads, when present: training_args.json (the training flags), metrics.json and eval_results.json
    (`{"metric": {"value": number, "split": ..., ...}}` or `{"metric": number}`), samples.png (embedded), and the
    unet and scheduler configs. The YAML metadata (library_name, license, tags, pipeline_tag, datasets when the
    training dataset is a Hub id, and a model-index with the metrics) is built with `ModelCardData`/`EvalResult`, so
    it validates. Keys that look like credentials (token, secret, password) and tokens never reach the card.

    Args:
        folder (`str` or `os.PathLike`): the pipeline folder.
        repo_id (`str`, *optional*): the repo the card will live in, used in the loading examples.
        license (`str`, defaults to `"apache-2.0"`): a Hub license id.
        template_path (`str` or `os.PathLike`, *optional*): another Jinja template (default: the packaged one).

    Returns:
        `huggingface_hub.ModelCard`: the card that was written.
    """
    from ..pipeline_ddpm_posterior import PIPELINE_CLASS  # torch: imported when a card is rendered, not for --help

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder / 'model_index.json'} is missing: {folder} is not a saved pipeline.")
    if repo_id is not None:
        check_repo_id(repo_id)
    training_args = _read_json(folder / "training_args.json")
    metrics = {**_read_metrics(folder / "metrics.json"), **_read_metrics(folder / "eval_results.json")}
    unet_config = _read_json(folder / "unet" / "config.json")
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
    names = [training_args.get(key) for key in ("dataset_name", "dataset", "train_data_dir")]
    dataset = next((name for name in names if isinstance(name, str) and name), None)
    model_name = (repo_id or folder.resolve().name).split("/")[-1]
    learned_variance = scheduler_config.get("variance_type") in LEARNED_VARIANCE_TYPES
    tags = [TASK, f"diffusers:{PIPELINE_CLASS}", "diffusers", "ddpm", "hf-ddpm"]
    card_data = ModelCardData(
        library_name="diffusers",
        license=license,
        tags=tags + (["improved-ddpm"] if learned_variance else []),
        pipeline_tag=TASK,
        datasets=[dataset] if dataset and _is_hub_dataset_id(dataset) else None,
        model_name=model_name,
        eval_results=_eval_results(metrics, dataset or "unknown") or None,
    )
    parameters = _count_parameters(sorted((folder / "unet").glob("*.safetensors")))
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE_PATH),
        generated_marker=GENERATED_MARKER,
        model_name=model_name,
        repo_id=repo_id or f"your-username/{model_name}",
        pipeline_class=PIPELINE_CLASS,
        learned_variance=learned_variance,
        sample_size=unet_config.get("sample_size", "?"),
        in_channels=unet_config.get("in_channels", "?"),
        num_train_timesteps=scheduler_config.get("num_train_timesteps", 1000),
        samples_image="samples.png" if (folder / "samples.png").is_file() else None,
        unet_rows=_rows(unet_config, UNET_KEYS),
        parameters=f"{parameters:,}" if parameters else None,
        scheduler_rows=_rows(scheduler_config, SCHEDULER_KEYS),
        training_rows=_rows(training_args, training_args),
        metric_rows=_metric_rows(metrics),
        has_bits_per_dim=any("bits_per_dim" in name or name == "bpd" for name in metrics),
        dataset=dataset,
    )
    card = ModelCard(redact(str(card), known_tokens()))  # e.g. a token passed as a training flag of another name
    atomic_write_text(folder / "README.md", str(card))
    return card


def _read_json(path: Path) -> dict:
    return read_json_object(path) if path.is_file() else {}


def _is_hub_dataset_id(name: str) -> bool:
    """A Hub dataset id ("mnist", "ylecun/mnist"), not a local path or a "source:name" spec."""
    if os.path.exists(name) or name.startswith((".", "~", "/")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _read_metrics(path: Path) -> dict[str, dict]:
    """{"metric": {"value": number, ...}} from `path` (also read from {"metric": number}; {} when absent), checked."""
    metrics = {
        name: entry if isinstance(entry, dict) else {"value": entry} for name, entry in _read_json(path).items()
    }
    for name, entry in metrics.items():
        value = entry.get("value")
        if value is None:  # NaN is written as null: shown as such, left out of the model-index
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(
                f"Metric {name!r} in {path} needs a finite number (or null) as its value "
                f'({{"{name}": {{"value": 1.23, ...}}}} or {{"{name}": 1.23}}), got {value!r}.'
            )
    return metrics


def _eval_results(metrics: dict[str, dict], dataset: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=TASK,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=str(entry["split"]) if entry.get("split") is not None else None,
            metric_type=name,
            metric_name=name.replace("_", " "),
            metric_value=float(entry["value"]),
        )
        for name, entry in metrics.items()
        if entry.get("value") is not None
    ]


def _metric_rows(metrics: dict[str, dict]) -> list[dict[str, str]]:
    rows = []
    for name, entry in metrics.items():
        details = {key: value for key, value in entry.items() if key not in ("value", "split")}
        rows.append(
            {
                "name": _format(name),
                "value": _format(entry.get("value")),
                "split": _format(entry.get("split", "")),
                "details": ", ".join(f"{key}: {value}" for key, value in _rows(details, details)),
            }
        )
    return rows


def _count_parameters(weight_files: list[Path]) -> int:
    """Parameters in safetensors files, read from their headers without loading the tensors."""
    from safetensors import safe_open

    total = 0
    for path in weight_files:
        with safe_open(path, framework="numpy") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118
    return total


def _rows(config: dict, keys: Iterable[str]) -> list[tuple[str, str]]:
    """(key, value) table cells of `config` for `keys`, in that order; keys that look like credentials left out."""
    return [(_format(key), _format(config[key])) for key in keys if key in config and not SECRET_KEY_RE.search(key)]


def _format(value: Any) -> str:
    """`value` as the text of a Markdown table cell."""
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_format(item) for item in value)
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True)
    elif value is None:
        text = "–"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")
