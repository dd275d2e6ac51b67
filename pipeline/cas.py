"""The Classification Accuracy Score (stages/cas.py): training sets of a model's samples,
labelled by the class they were drawn for, and the classifier trained on them."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.data.batches import InMemoryBatches
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.fmnist import LABELS
from pipeline.data.phrasings import train_phrasings
from pipeline.evaluate import judge_outputs, per_class_accuracy, sample_in_batches
from pipeline.finite import require_finite_tensor
from pipeline.models.judge import JudgeCNN
from pipeline.runtime import make_deterministic
from pipeline.train import fit


def generated_training_set(
    model,
    conditioning: str,
    embeddings: Path | None,
    per_class: int,
    temperature: float,
    device,
    generator,
    guidance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of every class at (guidance w, temperature), and their labels:
    under one-hot labels, or (``conditioning`` text) each class's training phrasings in turn,
    read from the ``embeddings`` folder."""
    labels = torch.arange(len(LABELS), device=device).repeat_interleave(per_class)
    if conditioning == "label":
        conditions = F.one_hot(labels, len(LABELS)).float()
    else:
        rows = fmnist_caption_set()["train"]
        phrasings = train_phrasings(embeddings, rows, len(LABELS)).to(device)
        offset = torch.arange(len(labels), device=device)
        conditions = phrasings.pick(labels, offset=offset)
    images = sample_in_batches(model, conditions, generator, 1000, temperature, guidance)
    return images, labels


def classifier(feature_dim: int, device) -> JudgeCNN:
    """A fresh CAS classifier: the judge's architecture."""
    return JudgeCNN.of(num_classes=len(LABELS), feature_dim=feature_dim).to(device)


def train_classifier(model, p, generator, train, test, tag: str, **fit_paths) -> list[dict]:
    """Train ``model`` on ``train`` (x, y) by ``p`` (the cas params), testing on ``test``
    (x, y) after each epoch: its history. ``fit_paths``: state_path, live_dir, fingerprint."""
    return fit(
        model,
        InMemoryBatches(*train, batch_size=p.batch_size),
        InMemoryBatches(*test, batch_size=1000),
        p,
        name=f"cas {tag}",
        generator=generator,
        **fit_paths,
    )


def cas_metrics(history: list[dict], model, test, conditions: dict) -> dict:
    """A trained classifier's CAS: accuracy on the real ``test`` (x, y), overall (its last
    epoch's) and per class, and the ``conditions`` it was trained under."""
    predicted, _ = judge_outputs(model, test[0])
    return {
        "accuracy_on_real_test": history[-1]["test/accuracy"],
        "per_class": per_class_accuracy(predicted, test[1], LABELS),
        "conditions": {
            **conditions,
            "classifier": "judge architecture (pipeline/models/judge.py)",
            "tested_on": f"{len(test[0])} real test images",
        },
    }


def frontier_cas(
    model, conditioning, embeddings, p, sweeps, feature_dim, device, test, name
) -> dict:
    """CAS at every (w, T) of ``sweeps`` ((guidance_sweep, temperature_sweep)): for each a
    fresh classifier trained on ``p.frontier_samples_per_class`` samples per class, drawn with
    seed ``p.seed`` (the same noise at every point), tested on ``test``. A smaller training
    set than the headline CAS, so these read lower; the same at every point, so the points
    compare. The eval keys ``frontier`` and ``frontier_conditions``."""
    guidances, temperatures = sweeps
    points = []
    for t in temperatures:
        for w in guidances:
            generator = make_deterministic(p.seed, device)
            per_class = p.frontier_samples_per_class
            x, y = generated_training_set(
                model, conditioning, embeddings, per_class, t, device, generator, w
            )
            require_finite_tensor(x, f"cas {name}: samples at w={w:g}, T={t:g}")
            history = train_classifier(  # seconds a point: no resume state, no dvclive
                classifier(feature_dim, device),
                p,
                generator,
                (x, y),
                test,
                f"{name} w={w:g} T={t:g}",
                state_path=None,
                live_dir=None,
                fingerprint="",
            )
            points.append({"guidance": w, "temperature": t, "cas": history[-1]["test/accuracy"]})
    n = p.frontier_samples_per_class * len(LABELS)
    conditions = {"training_images": n, "epochs": p.epochs, "sample_seed": p.seed}
    return {"frontier": points, "frontier_conditions": conditions}
