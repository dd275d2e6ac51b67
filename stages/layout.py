"""Where each stage reads and writes, relative to the repository root (see dvc.yaml)."""

from pathlib import Path

RAW_FMNIST = Path("data/raw/fmnist")
MODELS = Path("models")
METRICS = Path("metrics")
REPORTS = Path("reports")


def model_dir(name: str) -> Path:
    return MODELS / name


def state_file(name: str) -> Path:
    """Resumable state: no DVC output, so DVC leaves it in place for a rerun, never caches it."""
    return MODELS / name / "state" / "train_state.safetensors"


def epochs_dir(name: str) -> Path:
    """Weights of the epochs in train.<name>.keep_epochs (Figs. 9, 10): a cached DVC output."""
    return MODELS / name / "epochs"


def live_dir(name: str) -> Path:
    """dvclive's per-epoch curves and last values: git-tracked metrics and plots."""
    return METRICS / name / "train"


COCO_STORE = Path("data/coco/store")  # downloads; not a DVC output, so reruns resume from it
COCO_MANIFESTS = Path("data/coco/manifest")  # one Parquet manifest per subset
COCO_SHARDS = Path("data/shards/coco")
EMBEDDINGS = Path("data/embeddings")


def embeddings_dir(encoder: str, dataset: str) -> Path:
    return EMBEDDINGS / encoder / dataset
