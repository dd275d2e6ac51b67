"""Stage train@<label model> and train_text@<text model>: a Fashion-MNIST CVAE of ``models:``.

The entry's ``conditioning`` says how it is conditioned: ``label``, the one-hot class (§2.1),
or an encoder, the embedding of a phrasing of the image's class, drawn per image and step from
the training phrasings of captions/fmnist.json (the held-out ones are never seen). The saved
config.json records the conditioning, ``cond_null_p`` and the image shape, so every reader
asks the model, not params.yaml. One writer per model: the run holds models/<name>/.lock.
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
from pipeline.latent_density import DENSITY_FILE, ExPostDensity
from pipeline.lock import model_lock
from pipeline.models.registry import build, image_shape
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitData, FitRun, clear_live, fit, publish_live
from stages.fingerprint import training_fingerprint
from stages.layout import RAW_FMNIST, embeddings_dir, live_dir, model_dir, state_file


def run(name: str, params_path: Path) -> None:
    entry = load_params(params_path).model(name)
    with model_lock(model_dir(name), f"t2i train {name}"):
        clear_live(live_dir(name))
        _train(name, entry)
        publish_live(live_dir(name))  # after the model: metrics never outrun it


def _train(name: str, entry) -> None:
    p = entry.train
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    x_train, y_train = load_tensors(RAW_FMNIST, "train", p.train_limit, device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
    meta = {"labels": LABELS}
    if entry.is_text:
        rows = fmnist_caption_set()["train"]
        folder = embeddings_dir(entry.conditioning, "fmnist")
        phrasings = train_phrasings(folder, rows, len(LABELS)).to(device)

        def batches(x, y, batch_size):
            return PhrasingBatches(x, y, phrasings, batch_size=batch_size)

        cond_dim = phrasings.embeddings.shape[1]
        meta |= encoder_identity(folder).as_config()
    else:

        def batches(x, y, batch_size):
            return InMemoryBatches(x, F.one_hot(y, 10).float(), batch_size=batch_size)

        cond_dim = len(LABELS)
    arch = f"models.{name}.arch"
    model = build(arch, entry.class_name, entry.arch, input_dim=x_train.shape[1], cond_dim=cond_dim)
    model = model.to(device)
    run = FitRun(
        name,
        generator,
        training_fingerprint(f"t2i train {name}", model, p, entry.arch),
        state_path=state_file(name),
        live_dir=live_dir(name),
    )
    fit(
        model,
        FitData(batches(x_train, y_train, p.batch_size), batches(x_test, y_test, 1000)),
        p,
        run,
    )
    meta |= {"name": name, "class": entry.class_name, "data": entry.data}
    meta |= {"conditioning": entry.conditioning, "cond_null_p": p.cond_null_p}
    meta |= _density(name, entry, model, (x_train, y_train))
    save_model(model_dir(name), model, meta | {"image_shape": image_shape(entry.data, {})})


def _density(name: str, entry, model, train) -> dict:
    """A label model's ex-post latent density (``models.<name>.expost``), fitted on the
    posterior means of its training images and saved beside it; its config.json keys. The
    mixtures are seeded by the training seed, so a rerun writes the same file."""
    path = model_dir(name) / DENSITY_FILE
    path.unlink(missing_ok=True)  # never left beside weights it was not fitted to
    expost = getattr(entry, "expost", None)
    if expost is None:
        return {}
    x, y = train
    density = ExPostDensity.fit(model, x, y, len(LABELS), expost.components, entry.train.seed)
    return {"density_components": expost.components, "density_sha256": density.save(path)}
