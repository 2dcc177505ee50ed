# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Model cards: `save_model_card` renders README.md from the training args, metrics and configs of a folder."""

import math
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open

from .._choices import LEARNED_VARIANCE_TYPES
from ..files import atomic_write_text, read_json_object
from ._scan import known_tokens, redact

TEMPLATE_PATH = Path(__file__).parent.parent / "templates" / "model_card.md"
# The first line of the body of a card rendered here: push regenerates such cards, and keeps any card without it.
GENERATED_MARKER = (
    "<!-- hf-ddpm:generated-card (rendered by `hf-ddpm card`; delete this line to keep your edits when pushing) -->"
)
LICENSE_DEFAULT = "apache-2.0"
TASK = "unconditional-image-generation"
SECRET_KEY_RE = re.compile(r"token|secret|password|passwd|credential|api_key", re.IGNORECASE)


def save_model_card(folder: str | os.PathLike, *, repo_id: str | None = None, license: str = LICENSE_DEFAULT):
    """
    Render the model card of a saved pipeline and write it to `folder/README.md`, from what the folder holds:
    training_args.json, metrics.json and eval_results.json (`{"metric": {"value": number, "split": ..., ...}}` or
    `{"metric": number}`), samples.png, the configs. Keys that look like credentials and tokens never reach the card.

    Args:
        folder (`str` or `os.PathLike`): the pipeline folder.
        repo_id (`str`, *optional*): the repo the card will live in, used in the loading examples.
        license (`str`, defaults to `"apache-2.0"`): a Hub license id (a converted model's own, from conversion.json).

    Returns:
        `huggingface_hub.ModelCard`: the card that was written.
    """
    from ..pipeline_ddpm_posterior import PIPELINE_CLASS  # torch: not imported for `hf-ddpm --help`

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder / 'model_index.json'} is missing: {folder} is not a saved pipeline.")
    if repo_id:
        validate_repo_id(repo_id)
    model_name = (repo_id or folder.resolve().name).split("/")[-1]
    training_args = _public(_read_json(folder / "training_args.json"))
    metrics = {**_read_metrics(folder / "metrics.json"), **_read_metrics(folder / "eval_results.json")}
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    conversion = _read_json(folder / "conversion.json")  # `hf-ddpm convert`: the original checkpoint and its license
    if conversion.get("license") and license == LICENSE_DEFAULT:
        license = conversion["license"].lower()
    dataset = training_args.get("dataset_name") or training_args.get("train_data_dir")
    learned_variance = scheduler.get("variance_type") in LEARNED_VARIANCE_TYPES
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
    parameters = 0
    for path in (folder / "unet").glob("*.safetensors"):
        with safe_open(path, framework="numpy") as weights:  # the shapes, from the header
            parameters += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        generated_marker=GENERATED_MARKER,
        model_name=model_name,
        repo_id=repo_id or f"your-username/{model_name}",
        pipeline_class=PIPELINE_CLASS,
        learned_variance=learned_variance,
        has_samples=(folder / "samples.png").is_file(),
        unet=_read_json(folder / "unet" / "config.json"),
        parameters=f"{parameters:,}" if parameters else None,
        scheduler=scheduler,
        training_args=training_args,
        metrics=metrics,
        dataset=dataset,
        conversion=conversion,
    )
    card = ModelCard(redact(str(card), known_tokens()))  # e.g. a token passed as a training flag of another name
    atomic_write_text(folder / "README.md", str(card))
    return card


def _read_json(path: Path) -> dict:
    return read_json_object(path) if path.is_file() else {}


def _is_hub_dataset_id(name: str) -> bool:
    """A Hub dataset id ("mnist", "ylecun/mnist"), not a local folder or a "source:name" spec."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not os.path.exists(name)


def _public(config: dict) -> dict:
    """`config` without the keys that look like credentials."""
    return {key: value for key, value in config.items() if not SECRET_KEY_RE.search(key)}


def _read_metrics(path: Path) -> dict[str, dict]:
    """{"metric": {"value": number, ...}} from `path` (also read from {"metric": number}; {} when absent), checked."""
    metrics = {
        name: _public(entry) if isinstance(entry, dict) else {"value": entry}
        for name, entry in _read_json(path).items()
    }
    for name, entry in metrics.items():
        value = entry.get("value")  # NaN is written as null: shown as such, left out of the model-index
        if value is not None and not (type(value) in (int, float) and math.isfinite(value)):  # not a bool either
            raise ValueError(f"Metric {name!r} in {path} needs a finite number or null as its value, got {value!r}.")
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
