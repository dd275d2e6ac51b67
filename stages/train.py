"""Stage train@<model>: train one CVAE with the shared loop; write weights and curves."""

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.embeddings import read_embeddings
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.data.phrasings import ClassPhrasings, PhrasingBatches
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitSpec, InMemoryBatches, fit
from stages.fingerprint import training_fingerprint
from stages.layout import RAW_FMNIST, embeddings_dir, live_dir, model_dir, state_file
from stages.train_coco import train_coco


def _train_fmnist_mlp(name: str, p, make_batches, cond_dim: int, extra: dict) -> None:
    """The §2.1 MLP CVAE on Fashion-MNIST, conditioned by whatever ``make_batches`` pairs."""
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    x_train, y_train = load_tensors(RAW_FMNIST, "train", p.train_limit, device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
    model = CVAEMLP(784, cond_dim, p.hidden_dim, p.latent_dim).to(device)
    fit(
        model,
        make_batches(x_train, y_train, p.batch_size, device),
        make_batches(x_test, y_test, 1000, device),
        FitSpec(
            epochs=p.epochs,
            batch_size=p.batch_size,
            lr=p.lr,
            warmup_steps=p.warmup_steps,
            max_nonfinite_steps=p.max_nonfinite_steps,
            name=name,
        ),  # fmt: skip
        generator=generator,
        state_path=state_file(name),
        live_dir=live_dir(name),
        fingerprint=training_fingerprint(
            f"t2i train {name}", model, p.model_dump(exclude={"epochs", "max_nonfinite_steps"})
        ),
    )
    save_model(model_dir(name), model, {"dataset": "fmnist", "labels": LABELS, **extra})


def fmnist_label(params_path: Path) -> None:
    """§2.1: the MLP CVAE conditioned on one-hot class labels."""

    def one_hot_batches(x, y, batch_size, device):
        return InMemoryBatches(x, F.one_hot(y, 10).float(), batch_size=batch_size)

    _train_fmnist_mlp("fmnist_label", load_params(params_path).train.fmnist_label,
                      one_hot_batches, len(LABELS), {})  # fmt: skip


def train_phrasings(encoder: str) -> ClassPhrasings:
    """Embeddings of the training phrasings of captions/fmnist.json, by class."""
    columns, vectors = read_embeddings(embeddings_dir(encoder, "fmnist"))
    train_ids = {r["caption_id"] for r in fmnist_caption_set()["train"]}
    keep = torch.tensor([int(c) in train_ids for c in columns["caption_id"]])
    labels = torch.tensor(columns["image_id"])[keep]
    return ClassPhrasings(torch.from_numpy(vectors.astype("float32"))[keep], labels, len(LABELS))


def fmnist_text(params_path: Path) -> None:
    """§2.1's CVAE conditioned on caption embeddings: trained on the training phrasings only."""
    p = load_params(params_path).train.fmnist_text
    phrasings = train_phrasings(p.encoder)

    def phrasing_batches(x, y, batch_size, device):
        return PhrasingBatches(x, y, phrasings.to(device), batch_size=batch_size)

    _train_fmnist_mlp("fmnist_text", p, phrasing_batches, phrasings.embeddings.shape[1],
                      {"encoder": p.encoder})  # fmt: skip


def coco_clip(params_path: Path) -> None:
    """§2.2: the conv CVAE on CLIP caption embeddings."""
    train_coco("coco_clip", load_params(params_path).train.coco_clip)


def coco_t5(params_path: Path) -> None:
    """§2.3: the conv CVAE with T5 caption features and gated fusion."""
    train_coco("coco_t5", load_params(params_path).train.coco_t5)


MODELS = {"fmnist_label": fmnist_label, "fmnist_text": fmnist_text, "coco_clip": coco_clip,
          "coco_t5": coco_t5}  # fmt: skip


def run(name: str, params_path: Path) -> None:
    MODELS[name](params_path)
