"""Stage train@fmnist_label and train_text@fmnist_text: the §2.1 MLP CVAE on Fashion-MNIST.

The model registry says how each is conditioned: ``label``, the one-hot class (§2.1), or
``text``, the embedding of a phrasing of the image's class, drawn per image and step from
the training phrasings of captions/fmnist.json (the held-out ones are never seen).
"""

from pathlib import Path

import torch.nn.functional as F

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.batches import InMemoryBatches
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.embeddings import encoder_identity
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.data.phrasings import PhrasingBatches, train_phrasings
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import fit
from stages.fingerprint import training_fingerprint
from stages.layout import RAW_FMNIST, embeddings_dir, live_dir, model_dir, state_file


def run(name: str, params_path: Path) -> None:
    spec = model_spec(name)
    p = spec.train_params(load_params(params_path))
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    x_train, y_train = load_tensors(RAW_FMNIST, "train", p.train_limit, device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
    if spec.conditioning == "label":

        def batches(x, y, batch_size):
            return InMemoryBatches(x, F.one_hot(y, 10).float(), batch_size=batch_size)

        cond_dim, extra = len(LABELS), {}
    else:
        rows = fmnist_caption_set()["train"]
        folder = embeddings_dir(p.encoder, "fmnist")
        phrasings = train_phrasings(folder, rows, len(LABELS))
        phrasings = phrasings.to(device)

        def batches(x, y, batch_size):
            return PhrasingBatches(x, y, phrasings, batch_size=batch_size)

        cond_dim = phrasings.embeddings.shape[1]
        extra = {"encoder": p.encoder, **encoder_identity(folder).as_config()}
    model = spec.build(p, input_dim=x_train.shape[1], cond_dim=cond_dim).to(device)
    fit(
        model,
        batches(x_train, y_train, p.batch_size),
        batches(x_test, y_test, 1000),
        p,
        name=name,
        cond_null_p=p.cond_null_p,
        generator=generator,
        state_path=state_file(name),
        live_dir=live_dir(name),
        fingerprint=training_fingerprint(f"t2i train {name}", model, p),
    )
    save_model(model_dir(name), model, name, {"dataset": "fmnist", "labels": LABELS, **extra})
