"""The Classification Accuracy Score (stages/cas.py): training sets of a model's samples,
labelled by the class they were drawn for, and the classifier trained on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.data.batches import InMemoryBatches
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.fmnist import LABELS
from pipeline.data.phrasings import train_phrasings
from pipeline.errors import PipelineError
from pipeline.evaluate import per_class_accuracy, sample_in_batches
from pipeline.finite import require_finite, require_finite_tensor
from pipeline.models.judge import JudgeCNN
from pipeline.runtime import make_deterministic
from pipeline.train import FitData, FitRun, fit


@dataclass(frozen=True)
class SampleSource:
    """A trained model as a source of labelled training sets: the model, its conditioning
    (``label``, or the encoder of the caption ``embeddings`` folder), where it samples, and
    its name (in errors)."""

    model: torch.nn.Module
    conditioning: str
    embeddings: Path | None
    device: torch.device
    name: str
    density: object = None  # its ex-post latent density (sampler expost), if it has one

    def training_set(
        self, per_class: int, at: tuple[str, float, float], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_class`` samples of every class at ``at`` = (sampler, guidance w, temperature),
        and their labels: under one-hot labels, or (a text model) each class's training
        phrasings in turn."""
        sampler, guidance, temperature = at
        if sampler == "expost" and self.density is None:
            raise PipelineError(f"cas {self.name}: sampler expost, but it has no ex-post density")
        density = self.density if sampler == "expost" else None
        labels = torch.arange(len(LABELS), device=self.device).repeat_interleave(per_class)
        if self.conditioning == "label":
            conditions = F.one_hot(labels, len(LABELS)).float()
        else:
            rows = fmnist_caption_set()["train"]
            phrasings = train_phrasings(self.embeddings, rows, len(LABELS)).to(self.device)
            offset = torch.arange(len(labels), device=self.device)
            conditions = phrasings.pick(labels, offset=offset)
        model = self.model
        at = (temperature, guidance, density)
        images = sample_in_batches(model, conditions, generator, 1000, *at)
        where = f"cas {self.name}: samples at {sampler}, w={guidance:g}, T={temperature:g}"
        require_finite_tensor(images, where)
        return images, labels


def classifier(feature_dim: int, device) -> JudgeCNN:
    """A fresh CAS classifier: the judge's architecture."""
    return JudgeCNN.of(num_classes=len(LABELS), feature_dim=feature_dim).to(device)


class FreshSamples:
    """GaFi's dataset recycle (``cas.fresh_each_epoch``): each epoch trains on a new sample set
    of ``per_class`` images per class from the same model, drawn with the loop's generator."""

    def __init__(self, source: SampleSource, per_class: int, at: tuple, batch_size):
        self.source, self.per_class, self.at, self.batch_size = source, per_class, at, batch_size

    def __len__(self) -> int:
        return self.per_class * len(LABELS)

    def batches(self, generator: torch.Generator | None = None):
        x, y = self.source.training_set(self.per_class, self.at, generator)
        yield from InMemoryBatches(x, y, batch_size=self.batch_size).batches(generator)


def cas_training_data(source: SampleSource, p, at: tuple[str, float, float], generator):
    """The classifier's training data by the cas params ``p`` at ``at`` (sampler, w, T): one
    fixed sample set (x, y) drawn now, or (``p.fresh_each_epoch``, GaFi's dataset recycle) a
    new one every epoch."""
    if p.fresh_each_epoch:
        return FreshSamples(source, p.samples_per_class, at, p.batch_size)
    return source.training_set(p.samples_per_class, at, generator)


def train_classifier(model, p, train, test, run: FitRun) -> list[dict]:
    """Train ``model`` by ``p`` (a FitSpec: the cas recipe) on ``train`` (x, y), or on a
    Batches such as :class:`FreshSamples`, testing on ``test`` (x, y) after each epoch: its
    history."""
    if isinstance(train, tuple):
        train = InMemoryBatches(*train, batch_size=p.batch_size)
    return fit(model, FitData(train, InMemoryBatches(*test, batch_size=1000)), p, run)


def training_conditions(p, train, trained_on: str, at: tuple | None) -> dict:
    """What a CAS classifier was trained on and how: the ``conditions`` of its metrics;
    ``at``: the (sampler, w, T) of its samples, None for real images."""
    images = len(train[0]) if isinstance(train, tuple) else len(train)
    conditions = dict(trained_on=trained_on, training_images=images, epochs=p.epochs)
    sampler, guidance, temperature = at or (None, None, None)
    conditions |= {"sampler": sampler, "guidance": guidance, "temperature": temperature}
    conditions |= {"lr": p.lr, "lr_schedule": p.lr_schedule, "amp": p.amp}
    return conditions | {"fresh_each_epoch": isinstance(train, FreshSamples)}


@torch.no_grad()
def _predictions(model, x: torch.Tensor, amp: bool, batch_size: int = 1000) -> torch.Tensor:
    """The classes ``model`` predicts for ``x``, in batches as the loop tests, under bf16
    autocast when ``amp`` (the logits are cast back to float32 before the argmax)."""
    model.eval()
    parts = []
    for start in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x[start : start + batch_size])
        parts.append(logits.float().argmax(1).cpu())
    return torch.cat(parts)


def cas_metrics(history: list[dict], model, test, conditions: dict) -> dict:
    """A trained classifier's CAS: accuracy on the real ``test`` (x, y), overall and per
    class from one pass (under the autocast it trained with, ``conditions["amp"]``), so the
    classes average to the overall accuracy exactly; and the ``conditions`` it was trained
    under. (``history``'s last test accuracy is the loop's own pass, batched otherwise: under
    bf16 it may differ from this one by an image or two.)"""
    predicted = _predictions(model, test[0], bool(conditions.get("amp")))
    require_finite(history[-1], "the classifier's last epoch")
    return {
        "accuracy_on_real_test": float((predicted == test[1].cpu()).float().mean()),
        "per_class": per_class_accuracy(predicted, test[1], LABELS),
        "conditions": {
            **conditions,
            "classifier": "judge architecture (pipeline/models/judge.py)",
            "tested_on": f"{len(test[0])} real test images",
        },
    }


def frontier_spec(p):
    """The cheaper recipe of ``p.frontier`` as a FitSpec: the headline recipe ``p`` with the
    frontier's epochs and learning rate (so an evaluation's DVC params name ``cas.frontier``
    and the FitSpec keys of ``cas`` other than epochs, lr and lr_schedule)."""
    recipe = p.frontier
    return p.model_copy(update={k: getattr(recipe, k) for k in ("epochs", "lr", "lr_schedule")})


def frontier_cas(source: SampleSource, p, sweeps, feature_dim: int, test) -> dict:
    """CAS at every (sampler, w, T) of ``sweeps`` ((sampler_sweep, guidance_sweep,
    temperature_sweep)): for each a fresh classifier trained by the cheaper recipe of
    ``p.frontier`` on its samples per class, drawn with seed ``p.seed`` (the same noise at
    every point), tested on ``test``. Fewer samples and epochs than the headline CAS, so these
    read lower; the same at every point, so the points compare. The eval keys ``frontier``
    and ``frontier_conditions``."""
    recipe, spec = p.frontier, frontier_spec(p)
    samplers, guidances, temperatures = sweeps
    points = []
    for sampler in samplers:
        for t in temperatures:
            for w in guidances:
                generator = make_deterministic(p.seed, source.device)
                x, y = source.training_set(recipe.samples_per_class, (sampler, w, t), generator)
                label = f"cas {source.name} {sampler} w={w:g} T={t:g}"
                net = classifier(feature_dim, source.device)
                run = FitRun(label, generator, fingerprint="")  # seconds: no resume state
                history = train_classifier(net, spec, (x, y), test, run)
                cas = history[-1]["test/accuracy"]
                points.append({"sampler": sampler, "guidance": w, "temperature": t, "cas": cas})
    n = recipe.samples_per_class * len(LABELS)
    conditions = {"training_images": n, "epochs": recipe.epochs, "sample_seed": p.seed}
    conditions |= {"lr": recipe.lr, "lr_schedule": recipe.lr_schedule}
    return {"frontier": points, "frontier_conditions": conditions}
