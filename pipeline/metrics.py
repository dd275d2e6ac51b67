"""The metrics files the pipeline writes, one typed schema each, shared by writer and readers.

    metrics/<model>/eval.json      LabelEval (stages/evaluate.py), TextEval (evaluate_text.py)
                                   or CocoEval (coco_evaluate.py): chosen by the model's
                                   params entry (:func:`eval_schema`), never by which keys exist
    metrics/<model>/frontier.json  FrontierRows (pipeline/frontier.py plot_rows)
    metrics/cas/<model>.json       ModelCas (stages/cas.py); metrics/cas/real.json: RealCas
    metrics/**/train/metrics.json  Live (dvclive, written by pipeline/train.py); JudgeLive

Every number is finite and in its range (accuracies in [0, 1], distances >= 0, guidance w in
[0, 20], temperature in (0, 10]); a spread over sample seeds is one shape, ``MeanStd``
{"mean", "std"}. A sweep is a set: its (w, T) points are distinct as printed (:func:`w_text`),
at most MAX_SWEEP of them. Writers call :func:`write_metrics` (atomic), readers
:func:`read_metrics` (bounded, depth-limited JSON, then the schema): a bad file is one
PipelineError naming the file and the dotted key. :func:`cell` formats any value for a table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)

from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.jsonfile import parse_json, read_json

HINT = "rerun the stage that writes it (dvc repro) or delete it"
MAX_SWEEP = 64  # points of one frontier: a sweep is a short list of values, not a grid search


class Metrics(BaseModel):
    # strict: `true` or "1e3" is not a number; allow_inf_nan=False: NaN and inf never are.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Real = float
NonNegative = Annotated[float, Field(ge=0)]
Accuracy = Annotated[float, Field(ge=0, le=1)]
Guidance = Annotated[float, Field(ge=0, le=20)]
Temperature = Annotated[float, Field(gt=0, le=10)]
Count = Annotated[int, Field(ge=1)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Scalar = Annotated[str, StringConstraints(max_length=1000)] | int | float | bool | None


def w_text(value: float) -> str:
    """How a guidance w or a temperature T is printed, everywhere: 0, 0.5, 3."""
    return f"{value:g}"


def _distinct(points: list) -> list:
    """A sweep's points are a set: no two print the same (w, T)."""
    seen = set()
    for point in points:
        key = point.point_key()
        if key in seen:
            raise ValueError(
                f"the point ({point.point_label()}) appears twice; a sweep's points are distinct"
            )
        seen.add(key)
    return points


T = TypeVar("T")
Sweep = Annotated[list[T], Field(min_length=1, max_length=MAX_SWEEP), AfterValidator(_distinct)]


Sampler = Literal["prior", "expost"]  # where z is drawn: p(z|c), or the ex-post density


class SweepPoint(Metrics):
    sampler: Sampler
    guidance: Guidance
    temperature: Temperature

    def point_key(self) -> tuple[str, ...]:
        """The point as printed: two points that print the same are the same point."""
        return self.sampler, w_text(self.guidance), w_text(self.temperature)

    def point_label(self) -> str:
        return f"{self.sampler}, w {w_text(self.guidance)}, T {w_text(self.temperature)}"


class MeanStd(Metrics):
    """A number measured over several sample seeds: its mean and sample std (n - 1)."""

    mean: NonNegative
    std: NonNegative


class AccuracyMeanStd(MeanStd):
    mean: Accuracy
    std: Accuracy


class SampleAccuracy(Metrics):
    """Share of samples the judge assigns to the class they were drawn for."""

    overall: AccuracyMeanStd
    per_class: Annotated[dict[Name, AccuracyMeanStd], Field(max_length=1000)]


class FrontierPoint(SweepPoint):
    """One (sampler, w, T) point of eval.json's ``frontier``, scored on the test set."""

    accuracy: AccuracyMeanStd
    frechet: MeanStd
    spread: MeanStd


class ChosenGuidance(Metrics):
    w: Guidance
    temperature: Temperature
    sampler: Sampler


class ValidationPoint(Metrics):
    accuracy: Accuracy
    frechet: NonNegative
    spread: NonNegative
    cas: Accuracy  # the cheap recipe's, tested on the validation images


WKey = Annotated[
    str,
    StringConstraints(pattern=r"^(prior|expost) w=[0-9][0-9.e+-]{0,15} T=[0-9][0-9.e+-]{0,15}$"),
]


class GuidedEval(Metrics):
    """What every Fashion-MNIST evaluation writes about guidance (pipeline/frontier.py)."""

    frontier: Sweep[FrontierPoint]
    guidance: ChosenGuidance
    guidance_rule: Text
    guidance_validation: Annotated[dict[WKey, ValidationPoint], Field(max_length=MAX_SWEEP)]
    guidance_validation_real_spread: NonNegative
    within_class_spread_real_test: NonNegative

    @model_validator(mode="after")
    def _one_chosen_w(self):
        c, g = self.conditions, self.guidance
        if (c.sampler, c.guidance, c.temperature) != (g.sampler, g.w, g.temperature):
            raise ValueError(
                f"conditions ({c.sampler}, w {w_text(c.guidance)}, T {w_text(c.temperature)}) "
                f"differ from guidance ({g.sampler}, w {w_text(g.w)}, T {w_text(g.temperature)})"
            )
        return self


class SampleConditions(Metrics):
    features: Text
    sampler: Sampler
    guidance: Guidance
    sample_seeds: Count
    temperature: Temperature
    test_images: Count


class LabelConditions(SampleConditions):
    iw_k: Count
    samples_per_class: Count
    validation_images: Text


class LabelEval(GuidedEval):
    """eval.json of a label-conditioned Fashion-MNIST model (stages/evaluate.py)."""

    conditions: LabelConditions
    frechet_judge_features: MeanStd
    frechet_real_vs_real: MeanStd
    judge_accuracy_on_real_test: Accuracy
    judge_accuracy_on_real_test_per_class: Annotated[dict[Name, Accuracy], Field(max_length=1000)]
    judge_accuracy_on_samples: SampleAccuracy
    test_iw_nll_nats: Real
    test_kl_nats: Real  # >= 0 in exact arithmetic; float32 may dip a hair below
    test_nelbo_nats: Real
    test_recon_nats: Real
    within_class_spread: MeanStd

    # What the results call each number, the same for a label and a text model:
    @property
    def samples(self) -> SampleAccuracy:  # the samples the headline scores
        return self.judge_accuracy_on_samples

    @property
    def samples_frechet(self) -> MeanStd:
        return self.frechet_judge_features

    validation: ClassVar[None] = None  # a label model has no phrasings
    heldout: ClassVar[None] = None
    heldout_frechet: ClassVar[None] = None

    @property
    def test_nelbo(self) -> float:
        return self.test_nelbo_nats

    @property
    def per_class(self) -> dict[str, AccuracyMeanStd]:
        return self.judge_accuracy_on_samples.per_class

    def per_class_views(self) -> dict[str, dict]:
        return {
            "real test": self.judge_accuracy_on_real_test_per_class,
            "samples": self.judge_accuracy_on_samples.per_class,
        }


class TextConditions(SampleConditions):
    encoder: Name
    samples_per_caption: Count
    val_phrasings_compared_with: Text


class TextEval(GuidedEval):
    """eval.json of a text-conditioned Fashion-MNIST model (stages/evaluate_text.py): each
    number for the held-out, validation and training phrasings."""

    conditions: TextConditions
    frechet_judge_features_heldout_phrasings: MeanStd
    frechet_judge_features_train_phrasings: MeanStd
    frechet_judge_features_val_phrasings: MeanStd
    judge_accuracy_heldout_phrasings: SampleAccuracy
    judge_accuracy_train_phrasings: SampleAccuracy
    judge_accuracy_val_phrasings: SampleAccuracy
    within_class_spread_heldout_phrasings: MeanStd
    within_class_spread_train_phrasings: MeanStd
    within_class_spread_val_phrasings: MeanStd

    @property
    def samples(self) -> SampleAccuracy:  # training phrasings: the label model's peer
        return self.judge_accuracy_train_phrasings

    @property
    def samples_frechet(self) -> MeanStd:
        return self.frechet_judge_features_train_phrasings

    @property
    def validation(self) -> SampleAccuracy:
        return self.judge_accuracy_val_phrasings

    @property
    def heldout(self) -> SampleAccuracy:
        return self.judge_accuracy_heldout_phrasings

    @property
    def heldout_frechet(self) -> MeanStd:
        return self.frechet_judge_features_heldout_phrasings

    test_nelbo: ClassVar[None] = None  # a text model's evaluation does not compute it

    @property
    def per_class(self) -> dict[str, AccuracyMeanStd]:  # never-seen phrasings
        return self.judge_accuracy_heldout_phrasings.per_class

    def per_class_views(self) -> dict[str, dict]:
        return {
            f"{split} phrasings": getattr(self, f"judge_accuracy_{split}_phrasings").per_class
            for split in ("heldout", "train", "val")
        }


class FrontierRow(SweepPoint):
    """One row of frontier.json: flat, for `dvc plots` (x: frechet, y: accuracy)."""

    accuracy: Accuracy
    accuracy_std: Accuracy
    frechet: NonNegative
    frechet_std: NonNegative
    spread: NonNegative
    spread_std: NonNegative
    real_spread: NonNegative


class FrontierRows(RootModel):
    model_config = ConfigDict(frozen=True, strict=True)
    root: Sweep[FrontierRow]


# ---------------------------------------------------------------------------- COCO (§3.2)

Conditions = Annotated[dict[Name, Scalar | dict[Name, Scalar]], Field(max_length=100)]


def _psnr(value: float) -> float:
    if math.isnan(value) or value == -math.inf:
        raise ValueError("expected a number, or +inf for images reconstructed exactly")
    return value


class Reconstruction(Metrics):
    mse: NonNegative
    psnr_db: Annotated[float, Field(allow_inf_nan=True), AfterValidator(_psnr)]
    ssim: Annotated[float, Field(ge=-1, le=1)]
    images: Count


class Absent(Metrics):
    """A metric that could not be computed, and why (its weights are missing)."""

    value: None
    absent: Text
    conditions: Conditions


class Fid(Metrics):
    value: NonNegative
    conditions: Conditions
    real_half_vs_half: NonNegative | None = None


class Kid(Metrics):
    value: Real  # the unbiased estimate dips below 0 when the two sets match
    std: NonNegative
    conditions: Conditions


class ClipScore(Metrics):
    value: NonNegative
    real_images: NonNegative
    mismatched_captions: NonNegative
    conditions: Conditions


class RPrecision(Metrics):
    value: Accuracy
    std: NonNegative
    draws: Count
    candidates: Count
    real_images: Accuracy
    real_images_std: NonNegative
    conditions: Conditions


def _absent_or(kind: type[Metrics]):
    def tag(value) -> str:
        return "absent" if isinstance(value, dict) and "absent" in value else "scored"

    return Annotated[
        Annotated[kind, Tag("scored")] | Annotated[Absent, Tag("absent")], Discriminator(tag)
    ]


class CaptionOnly(Metrics):
    fid: _absent_or(Fid)
    kid: _absent_or(Kid)
    clip_s: _absent_or(ClipScore)
    clipscore_100: _absent_or(ClipScore)
    clip_r_precision: _absent_or(RPrecision)


class CocoSampling(Metrics):
    guidance: Guidance
    temperature: Temperature


class CocoConditions(Metrics):
    images: Annotated[int, Field(ge=0)]
    image_size: Count
    subset: Name
    encoder: Name
    reconstruction: Text
    caption_only: CocoSampling


class CocoEval(Metrics):
    """eval.json of a COCO model (stages/coco_evaluate.py, pipeline/heldout.py)."""

    reconstruction: Reconstruction
    test_loss_per_image: Annotated[dict[Name, Real], Field(max_length=100)]
    test_nelbo_nats: Real | None = None  # only for a Bernoulli decoder's BCE + KL loss
    conditions: CocoConditions
    caption_only: CaptionOnly

    def per_class_views(self) -> dict[str, dict]:
        return {}


# ---------------------------------------------------------------------------- CAS


class CasConditions(Metrics):
    classifier: Text
    epochs: Count
    sampler: Sampler
    guidance: Guidance
    temperature: Temperature
    tested_on: Text
    trained_on: Text
    training_images: Count
    # the recipe (issue 26); absent from files of runs before it was recorded
    lr: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    lr_schedule: Literal["constant", "onecycle"] | None = None
    fresh_each_epoch: bool | None = None
    amp: bool | None = None  # bf16 autocast


class RealCasConditions(CasConditions):
    sampler: None
    guidance: None
    temperature: None


class CasScore(Metrics):
    """A classifier trained on one training set, tested on the real test set."""

    accuracy_on_real_test: Accuracy
    per_class: Annotated[dict[Name, Accuracy], Field(max_length=1000)]
    conditions: CasConditions


class CasPoint(SweepPoint):
    cas: Accuracy


class CasFrontierConditions(Metrics):
    epochs: Count
    sample_seed: Annotated[int, Field(ge=0)]
    training_images: Count
    lr: Annotated[float, Field(gt=0.0, le=1.0)] | None = None  # the frontier's recipe
    lr_schedule: Literal["constant", "onecycle"] | None = None


class ModelCas(CasScore):
    """metrics/cas/<model>.json: CAS at the (sampler, w, T) its evaluation chose, by the
    headline recipe, and at every frontier point by the cheaper one (both keys present, or
    neither: cas.frontier.samples_per_class 0)."""

    frontier: Sweep[CasPoint] | None = None
    frontier_conditions: CasFrontierConditions | None = None

    @model_validator(mode="after")
    def _frontier_with_its_conditions(self):
        if (self.frontier is None) != (self.frontier_conditions is None):
            raise ValueError("frontier and frontier_conditions come together, or neither")
        return self


class RealCas(CasScore):
    """metrics/cas/real.json: the classifier trained on the real training images."""

    conditions: RealCasConditions


# ---------------------------------------------------------------------------- headline


class HeldoutPoint(Metrics):
    """A model at one operating point: its sampler, w and T, what the judge scores, and its
    CAS there by the one headline recipe (None: not measured at that point)."""

    model: Name
    sampler: Literal["prior", "expost"]
    guidance: Guidance
    temperature: Temperature
    accuracy: MeanStd
    cas: Accuracy | None


class HeadlinePoint(HeldoutPoint):
    fd: MeanStd


class Headline(Metrics):
    """metrics/headline.json, written by scripts/results_table.py from the validated metrics
    beside it: the real-data ceilings, the paper's model, the best model at its
    validation-chosen point and the text model on held-out phrasings."""

    judge_accuracy: Accuracy
    cas_real: Accuracy
    cas_recipe: Text
    paper: HeadlinePoint
    best: HeadlinePoint
    heldout: HeldoutPoint | None
    best_rule: Text


# ---------------------------------------------------------------------------- dvclive


class Live(Metrics):
    """dvclive's metrics.json of a training run: the last epoch's numbers per split."""

    step: Annotated[int, Field(ge=0)]
    train: Annotated[dict[Name, Real], Field(max_length=100)]
    test: Annotated[dict[Name, Real], Field(max_length=100)] = {}


class JudgeSplit(Metrics):
    loss: NonNegative
    accuracy: Accuracy
    nonfinite_steps: NonNegative | None = None


class JudgeLive(Live):
    """metrics/judge/train/metrics.json (and each CAS classifier's)."""

    train: JudgeSplit
    test: JudgeSplit


# ---------------------------------------------------------------------------- kinds, I/O

S = TypeVar("S", bound=BaseModel)
EvalSchema = type[LabelEval] | type[TextEval] | type[CocoEval]


def eval_schema(kind) -> EvalSchema | None:
    """The schema of a model's eval.json from what the model is, not from the file: ``kind``
    has ``data`` and ``conditioning`` (a params ``models:`` entry, or a saved model's meta).
    None: a model without an evaluation (the judge, conditioning None)."""
    if kind.data == "coco":
        return CocoEval
    if kind.conditioning is None:
        return None
    return LabelEval if kind.conditioning == "label" else TextEval


def cas_schema(name: str) -> type[ModelCas] | type[RealCas]:
    """metrics/cas/real.json is the real images' CAS; every other file a model's."""
    return RealCas if name == "real" else ModelCas


def _dotted(loc: tuple) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            text = str(part)
            if not text.replace("_", "").replace("-", "").replace("=", "").isalnum():
                text = json.dumps(text)  # a hostile key stays on one line, quoted
            parts.append(("." if parts else "") + text)
    return "".join(parts) or "(the whole file)"


WHY = {
    "extra_forbidden": "unknown key",
    "model_type": "expected a JSON object",
    "dict_type": "expected a JSON object",
    "list_type": "expected a JSON list",
}


def _error_line(where: str, exc: ValidationError, schema: type, hint: str) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(p for p in first["loc"] if p not in ("scored", "absent"))
    if first["type"] in WHY:
        why = WHY[first["type"]]
    else:
        got = first.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {json.dumps(got)[:60]})"
        why = first["msg"].removeprefix("Value error, ") + shown
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    line = f"{where}: {_dotted(loc)}: {why}{more}; not a valid {schema.__name__} file; {hint}"
    return line.replace("\r", "\\r").replace("\n", "\\n")


def validate_metrics(value: object, where: str, schema: type[S], hint: str = HINT) -> S:
    """``value`` (parsed JSON, or what a writer computed) as ``schema``; else one
    PipelineError naming ``where`` and the dotted key. A writer passes its own ``hint``
    (e.g. "nothing written"): it validates before :func:`write_metrics`."""
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        raise PipelineError(_error_line(str(where), exc, schema, hint)) from None


def parse_metrics(data: bytes, where: str, schema: type[S]) -> S:
    """Bytes already read (bounded, e.g. by pipeline/report.py read_owned) as ``schema``."""
    return validate_metrics(parse_json(data, str(where), "metrics JSON", HINT), where, schema)


def read_metrics(path: str | Path, schema: type[S]) -> S:
    """The metrics file at ``path`` through ``schema``; a bad file is one PipelineError."""
    return validate_metrics(read_json(path, "metrics JSON", HINT), str(path), schema)


def write_metrics(path: str | Path, metrics: BaseModel) -> None:
    """Write a validated metrics object atomically, as JSON that :func:`read_metrics` reads
    back to the same object (keys the writer left unset stay absent)."""
    write_json(path, metrics.model_dump(exclude_unset=True))


# ---------------------------------------------------------------------------- cells


def cell(value: MeanStd | float | None, digits: int | None = None) -> str:
    """A table cell: "–" for no value, "mean ± std" for a MeanStd, else the number. ``digits``:
    fixed decimals for both; None: 6 significant digits, the std to 2."""
    if value is None:
        return "–"
    if isinstance(value, MeanStd):
        if digits is None:
            return f"{value.mean:.6g} ± {value.std:.2g}"
        return f"{value.mean:.{digits}f} ± {value.std:.{digits}f}"
    if digits is None:
        return f"{value:.6g}"
    return f"{value:.{digits}f}"
