"""Where weights come from: a local directory or file, or a model-hub id.

A hub id is fetched into the local hub cache and then loaded from disk, so the same code path
serves downloaded weights, a folder a lab already holds, and the tiny ones the tests build.
Weights that cannot be found stop the stage with one message naming the params key. There
is no fallback to random weights.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def weights_error(key: str, spec: str, reason: str) -> PipelineError:
    return PipelineError(
        f"{key}: weights {spec!r} could not be loaded ({reason}). Set {key} to a local folder "
        "or file holding the weights (download them once where there is network access), or "
        "to a model-hub id on a machine that can reach the hub."
    )


def resolve_hf_dir(spec: str, key: str) -> Path:
    """A Hugging Face model folder: ``spec`` itself, or a hub id downloaded to the cache."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or spec.startswith("."):
        raise weights_error(key, spec, "no such folder")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.txt", "*.model", "model.safetensors"]
        return Path(snapshot_download(spec, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown id, no access: all end the same way
        raise weights_error(key, spec, f"not a local folder, and the hub said: {exc}") from None


def hf_weight_file(folder: Path, key: str) -> Path:
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise weights_error(key, str(folder), f"no {' or '.join(HF_WEIGHT_FILES)} inside")
