"""Stages cas@<model>, cas_text@<model> and cas_real: Classification Accuracy Score.

CAS (Ravuri & Vinyals 2019; for VAEs, Lesort et al. 2019): the judge's architecture
(pipeline/models/judge.py) is trained on generated images only, ``cas.samples_per_class`` per
class labelled by the condition they were drawn under (for a text model, the class of the
training phrasing), then tested on the real test set. ``cas_real`` trains the same classifier
with the same recipe on the real training images: the score a perfect generator would reach.
A model that draws only its class means scores high sample accuracy but a low CAS.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.atomic import write_json
from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.batches import InMemoryBatches
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.embeddings import encoder_identity
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.data.phrasings import train_phrasings
from pipeline.evaluate import judge_outputs, per_class_accuracy, sample_in_batches
from pipeline.finite import require_finite
from pipeline.models.judge import JudgeCNN
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import fit
from stages.fingerprint import training_fingerprint
from stages.layout import METRICS, RAW_FMNIST, embeddings_dir, model_dir, state_file

REAL = "real"  # `t2i cas real`: the classifier trained on real images


def generated_training_set(name: str, p, device, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``p.samples_per_class`` samples of every class from model ``name``, and their labels."""
    model, config = load_model(model_dir(name), device)
    labels = torch.arange(len(LABELS), device=device).repeat_interleave(p.samples_per_class)
    if model_spec(name).conditioning == "label":
        conditions = F.one_hot(labels, len(LABELS)).float()
    else:  # each class's training phrasings in turn
        rows, folder = fmnist_caption_set()["train"], embeddings_dir(config["encoder"], "fmnist")
        require_encoder_weights(config, model_dir(name), encoder_identity(folder))
        phrasings = train_phrasings(folder, rows, len(LABELS)).to(device)
        offset = torch.arange(len(labels), device=device)
        conditions = phrasings.pick(labels, offset=offset)
    images = sample_in_batches(model, conditions, generator, 1000, p.temperature)
    return images, labels


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    p = params.cas
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
    if name == REAL:
        x_train, y_train = load_tensors(RAW_FMNIST, "train", p.real_limit, device)
        trained_on = "the real training images"
    else:
        x_train, y_train = generated_training_set(name, p, device, generator)
        trained_on = f"samples of {name} only"
    classifier = JudgeCNN.of(num_classes=len(LABELS), feature_dim=params.judge.feature_dim)
    classifier = classifier.to(device)
    history = fit(
        classifier,
        InMemoryBatches(x_train, y_train, batch_size=p.batch_size),
        InMemoryBatches(x_test, y_test, batch_size=1000),
        p,
        name=f"cas {name}",
        generator=generator,
        state_path=state_file(f"cas_{name}"),
        live_dir=METRICS / "cas" / name / "train",
        fingerprint=training_fingerprint(
            f"t2i cas {name}", classifier, p.model_dump(exclude={"epochs", "max_nonfinite_steps"})
        ),
    )
    predicted, _ = judge_outputs(classifier, x_test)
    metrics = {
        "accuracy_on_real_test": history[-1]["test/accuracy"],
        "per_class": per_class_accuracy(predicted, y_test, LABELS),
        "conditions": {
            "trained_on": trained_on,
            "training_images": len(x_train),
            "temperature": None if name == REAL else p.temperature,
            "epochs": p.epochs,
            "classifier": "judge architecture (pipeline/models/judge.py)",
            "tested_on": f"{len(x_test)} real test images",
        },
    }
    path = METRICS / "cas" / f"{name}.json"
    write_json(path, require_finite(metrics, str(path)))
