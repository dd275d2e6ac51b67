"""Quality of caption-only samples: FID and KID against held-out real images, and CLIP scores.

FID and KID are torchmetrics' FrechetInceptionDistance and KernelInceptionDistance on the
2048-d pool features of torch-fidelity's InceptionV3 (the port of the TensorFlow FID network
that papers report). The features of each image set are extracted once and shared by both
metrics. The Inception weights come from a local file named in params; ``t2i weights
inception`` fetches torch-fidelity's file there, checked against its full sha256. The file
is never unpickled: ``torch.load(weights_only=True)`` reads it as plain tensors (a file
that holds anything else is refused before any of its code can run), and a file named
like the official one must have the official sha256.

CLIP-S (Hessel et al.), torchmetrics' CLIPScore and CLIP-R-precision are defined in
pipeline/clip_metrics.py, computed with the open_clip model evaluate.<model>.clip_score names.

Images stream through in batches (``CaptionOnlyScores``): per image only its Inception
features (2 x 2048 float32) and CLIP embeddings stay in memory, never the images, so FID-30K
(30,000 held-out images and as many samples) fits where the images would take 18 GB.

A metric whose weights are missing is written as absent, with the reason; it never stops the
stage and is never replaced by a made-up number. Every value carries its conditions (tool,
weights and their sha256, sample count, image size), because FID is not comparable across them.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import warnings
from importlib.metadata import version
from pathlib import Path

import torch

from pipeline.clip_metrics import ClipScorer
from pipeline.errors import PipelineError
from pipeline.hashing import sha256_file

log = logging.getLogger(__name__)

INCEPTION_FEATURES = 2048
FID_CHUNK = 4096  # feature rows per FID update
# torch-fidelity's release file (URL_INCEPTION_V3): its name carries the first 8 hex digits.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


def absent(reason: str, conditions: dict) -> dict:
    return {"value": None, "absent": reason, "conditions": conditions}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1] -> uint8, the input FID's Inception expects."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


# ---------------------------------------------------------------------------- FID and KID


def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """Tensors of a torch-saved state dict, read without running any code from the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1][:200]
        raise PipelineError(
            f"{key}: {path} holds more than plain tensors and is refused "
            f"unread (no pickle is run): {first}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:  # truncated, not torch
        first = str(exc).strip().splitlines()[0][:200]
        raise PipelineError(f"{key}: {path} is not a readable weights file ({first})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PipelineError(f"{key}: {path} is not a state dict of named tensors")
    return state


def load_inception(weights: str | None, key: str, device: torch.device) -> torch.nn.Module:
    """torchmetrics' NoTrainInceptionV3 (2048-d pool features) with weights from a local file."""
    if weights is None:
        raise PipelineError(f"{key} is null: no Inception weights were given")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PipelineError(
            f"{key}: no Inception weights file at {path} "
            f"(run `t2i weights inception --dest {path}` once where there is network access)"
        )
    if path.name == INCEPTION_FILE and (digest := sha256_file(path)) != INCEPTION_SHA256:
        raise PipelineError(
            f"{key}: {path} has sha256 {digest}, not that of torch-fidelity's "
            f"file ({INCEPTION_SHA256}); delete it and run `t2i weights "
            "inception`"
        )
    state = read_state_dict(path, key)
    from torchmetrics.image.fid import NoTrainInceptionV3

    # torch-fidelity builds the network and torch.load()s the weights itself, with a full
    # unpickler: it gets our own serialisation of the checked tensors, never the file.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(INCEPTION_FEATURES)],
            feature_extractor_weights_path=buffer,
        )
    except (RuntimeError, KeyError, ValueError) as exc:  # another network's weights
        first = str(exc).strip().splitlines()[0][:200]
        raise PipelineError(
            f"{key}: {path} is not torch-fidelity InceptionV3 weights ({first})"
        ) from None
    return net.to(device)


@torch.no_grad()
def inception_features(
    net: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Pool features (N, 2048) of uint8 images (N, 3, H, W), float32 on the CPU (the
    network's own precision; FID takes them to float64)."""
    parts = [
        net(images[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts)


class _Given(torch.nn.Module):
    """Feature 'extractor' for features computed already, so FID and KID share one pass."""

    num_features = INCEPTION_FEATURES

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_sizes(real: torch.Tensor, fake: torch.Tensor) -> None:
    if len(real) < 2 or len(fake) < 2:
        raise PipelineError(f"FID needs at least 2 images a side, got {len(real)} and {len(fake)}")


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, 2048)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_sizes(real, fake)
    metric = FrechetInceptionDistance(feature=_Given())  # float64 sums of float64 features
    for part in real.split(FID_CHUNK):  # chunks: no float64 copy of every feature at once
        metric.update(part.double(), real=True)
    for part in fake.split(FID_CHUNK):
        metric.update(part.double(), real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, *, subsets: int, subset_size: int, seed: int):
    """KID (mean, std over ``subsets`` random subsets, the subset size used), computed in
    the features' dtype (float32 from ``inception_features``)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_sizes(real, fake)
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # it warns that it keeps the features: we have them already
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Given(), subsets=subsets, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # KID draws its subsets with the global generator
    try:
        mean, std = metric.compute()
    finally:
        torch.random.set_rng_state(state)
    return float(mean), float(std), size


def fid_kid(
    real: torch.Tensor, fake: torch.Tensor, *, kid_subsets: int, kid_subset_size: int, seed: int
) -> dict:
    """FID and KID between two feature sets (N, 2048), from the same features."""
    kid_mean, kid_std, size = kid(
        real, fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    return {
        "fid": fid(real, fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subsets": kid_subsets,
        "kid_subset_size": size,
    }


def fid_conditions(weights: str | None, real: int, fake: int, image_size: int) -> dict:
    conditions = {
        "tool": f"torchmetrics {version('torchmetrics')} FrechetInceptionDistance / "
        "KernelInceptionDistance",
        "features": f"torch-fidelity {version('torch-fidelity')} InceptionV3, "
        f"{INCEPTION_FEATURES}-d pool, inputs resized to 299 (bilinear, antialias)",
        "weights": weights,
        "real_images": real,
        "samples": fake,
        "image_size": image_size,
    }
    if weights and Path(weights).expanduser().is_file():
        conditions["weights_sha256"] = sha256_file(Path(weights).expanduser())
    return conditions


def weights_hash_prefix(url: str) -> str | None:
    """The sha256 prefix in a torch-hub style file name (``name-<hex>.pth``), if any."""
    match = re.search(r"-([a-f0-9]{8,})\.[a-z]+$", url.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def fetch_inception(dest: Path, url: str | None = None, sha256: str | None = None, **http) -> Path:
    """Download InceptionV3 weights to ``dest``; ``dest`` appears only once the file checks out.

    torch-fidelity's file (the default) is checked against its full sha256; another ``url``
    against ``sha256`` when given, else against the sha256 prefix in its file name. A URL
    with neither is refused: unchecked weights are never written. The file must also read
    as plain tensors (``read_state_dict``).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from pipeline.atomic import atomic_path
    from pipeline.data.http import DownloadError, download
    from pipeline.redact import redact

    url = url or URL_INCEPTION_V3
    if sha256 is None and url == URL_INCEPTION_V3:
        sha256 = INCEPTION_SHA256
    expected = (sha256 or weights_hash_prefix(url) or "").lower()
    if not expected:
        raise PipelineError(f"{redact(url)}: no sha256 to check it against; pass --sha256")
    with atomic_path(dest) as tmp:
        try:
            download(url, tmp, **http)
        except DownloadError as exc:
            raise PipelineError(
                f"Inception weights could not be downloaded: {exc}. Copy the file to {dest} "
                "from a machine that has it, or pass --url"
            ) from None
        digest = sha256_file(tmp)
        if not digest.startswith(expected):
            raise PipelineError(
                f"{redact(url)}: sha256 {digest} does not match {expected}; nothing was written"
            )
        read_state_dict(tmp, redact(url))  # plain tensors, or refused before it is kept
    return dest


# ---------------------------------------------------------------------------- streamed


class CaptionOnlyScores:
    """FID, KID and the CLIP scores of caption-only samples against held-out real images,
    accumulated batch by batch (``add``), scored as the ``p`` section (EvaluateCoco, at params
    key ``key``) says. A metric whose weights are missing is absent with the reason, so the
    rest of the stage still completes."""

    def __init__(self, p, key: str, device: torch.device, image_size: int):
        self.p, self.key, self.device, self.image_size = p, key, device, image_size
        self.real_f, self.fake_f, self.e_real, self.e_fake = [], [], [], []
        self.captions: list[str] = []
        try:
            self.net = load_inception(p.inception_weights, f"{key}.inception_weights", device)
            self.inception_absent = None
        except PipelineError as exc:
            log.warning("FID and KID left absent: %s", exc)
            self.net, self.inception_absent = None, str(exc)
        try:
            if p.clip_score.weights is None:
                raise PipelineError(f"{key}.clip_score.weights is null: no CLIP weights were given")
            self.clip = ClipScorer(p.clip_score, f"{key}.clip_score.weights", device)
            self.clip_absent = None
        except PipelineError as exc:
            log.warning("CLIP scores left absent: %s", exc)
            self.clip, self.clip_absent = None, str(exc)

    def add(self, real: torch.Tensor, fake: torch.Tensor, captions: list[str]) -> None:
        """One batch: real held-out images, their caption-only samples (both (B, 3, S, S) in
        [0, 1]) and the captions."""
        bs = self.p.batch_size
        if self.net is not None:
            self.real_f.append(inception_features(self.net, to_uint8(real), bs, self.device))
            self.fake_f.append(inception_features(self.net, to_uint8(fake), bs, self.device))
        if self.clip is not None:
            self.e_real.append(self.clip.image_embeddings(real, bs))
            self.e_fake.append(self.clip.image_embeddings(fake, bs))
        self.captions += captions

    def result(self) -> dict:
        n, p, out = len(self.captions), self.p, {}
        conditions = fid_conditions(p.inception_weights, n, n, self.image_size)
        if self.net is None:
            out["fid"] = absent(self.inception_absent, conditions)
            out["kid"] = absent(self.inception_absent, conditions)
        else:
            real_f, fake_f = torch.cat(self.real_f), torch.cat(self.fake_f)
            scores = fid_kid(
                real_f,
                fake_f,
                kid_subsets=p.kid_subsets,
                kid_subset_size=p.kid_subset_size,
                seed=p.seed,
            )
            out["fid"] = {"value": scores["fid"], "conditions": conditions}
            out["kid"] = {
                "value": scores["kid_mean"],
                "std": scores["kid_std"],
                "conditions": {
                    **conditions,
                    "kid_subsets": scores["kid_subsets"],
                    "kid_subset_size": scores["kid_subset_size"],
                    "kid_features": "float32",
                },
            }
            half = len(real_f) // 2
            if half >= 2:  # a reference: FID between two halves of the real images
                out["fid"]["real_half_vs_half"] = fid(real_f[:half], real_f[half : 2 * half])
        if self.clip is None:
            for name in CLIP_METRICS:
                out[name] = absent(
                    self.clip_absent,
                    {"samples": n, "image_size": self.image_size, "model": p.clip_score.model},
                )
        else:
            out.update(
                self.clip.scores(
                    torch.cat(self.e_fake),
                    torch.cat(self.e_real),
                    self.captions,
                    p.batch_size,
                    draws=p.clip_score.r_precision_draws,
                    seed=p.seed,
                    image_size=self.image_size,
                )
            )
        return out


CLIP_METRICS = ("clip_s", "clipscore_100", "clip_r_precision")


def score_caption_only(
    p,
    key: str,
    x: torch.Tensor,
    samples: torch.Tensor,
    captions: list[str],
    device: torch.device,
    image_size: int,
) -> dict:
    """``CaptionOnlyScores`` of tensors already in memory, fed in batches of p.batch_size."""
    scores = CaptionOnlyScores(p, key, device, image_size)
    for start in range(0, len(x), p.batch_size):
        part = slice(start, start + p.batch_size)
        scores.add(x[part], samples[part], captions[part])
    return scores.result()
