"""An exported model folder (``t2i export``): where it may be written (:func:`check_target`),
its files (:func:`write_folder`) and its README.md model card as huggingface_hub writes one:
YAML metadata (``ModelCardData``: library_name, pipeline_tag text-to-image, tags, license,
datasets, and model-index results) above a Markdown body: what the model is, how it was
trained, its metrics with their spreads over sample seeds, its limitations, and how to push
the folder to a hub (the user's own command; nothing here touches the network).

Every number comes from validated metrics (pipeline/metrics.py schemas); every string from
params or metrics is escaped for Markdown before it enters the body, so no caption, model
name or summary can add links, images or HTML to a published card.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from pipeline.api import ENCODER_FILE, encoder_params, grid, samplers_of
from pipeline.atomic import write_bytes, write_json
from pipeline.checkpoint import load_model
from pipeline.errors import PipelineError
from pipeline.figures import save_png
from pipeline.hashing import sha256_file
from pipeline.latent_density import DENSITY_FILE, ExPostDensity
from pipeline.metrics import (
    CocoEval,
    LabelEval,
    MeanStd,
    ModelCas,
    TextEval,
    eval_schema,
    read_metrics,
    w_text,
)

LIBRARY = "t2i-cvae"
DATASETS = {"fmnist": ("fashion_mnist", "Fashion-MNIST"), "coco": ("coco", "MS-COCO 2014")}
TASK = "text-to-image"
_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#!|~&])")  # links, images, HTML, emphasis, tables


def md(text: object) -> str:
    """``text`` as literal Markdown on one line: specials backslash-escaped, breaks as spaces."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


@dataclass(frozen=True)
class CardFacts:
    """What a card says, all of it validated before: the saved model's meta, its params entry
    (None when params.yaml has none of that name), its metrics (None when not yet run)."""

    meta: object  # pipeline.checkpoint.SavedMeta
    entry: object | None  # a pipeline.config models: entry
    evaluation: LabelEval | TextEval | CocoEval | None
    cas: ModelCas | None
    folder: str  # the export's folder name, for the usage snippets


@dataclass(frozen=True)
class Result:
    """One model-index result: a metric's value, its spread over sample seeds, and where."""

    name: str
    kind: str  # the metric type: accuracy, frechet_distance, cas, fid, ...
    value: float
    std: float | None = None
    point: str = ""  # "prior, w 1, T 0.5": the sampling it was measured at

    def cell(self) -> str:
        spread = "" if self.std is None else f" ± {self.std:.3g}"
        return f"{self.value:.4g}{spread}"


def _spread(name: str, kind: str, value: MeanStd, point: str) -> Result:
    return Result(name, kind, value.mean, value.std, point)


def _at(w: float, t: float, sampler: str | None = None) -> str:
    """A sampling point as the card prints it: "prior, w 1, T 0.5" ("w 1, T 0.5" for COCO,
    which has one sampler)."""
    point = f"w {w_text(w)}, T {w_text(t)}"
    return point if sampler is None else f"{sampler}, {point}"


def results(facts: CardFacts) -> list[Result]:
    """The headline numbers: accuracy and FD at the chosen (sampler, w, T), the frontier's
    best points (with their CAS when the CAS file scores them), and CAS at the chosen point;
    COCO models: FID and CLIP score of caption-only samples."""
    ev, cas, found = facts.evaluation, facts.cas, []
    if isinstance(ev, LabelEval | TextEval):
        chosen = _at(ev.guidance.w, ev.guidance.temperature, ev.guidance.sampler)
        what = ""
        if isinstance(ev, LabelEval):
            accuracy, fd = ev.judge_accuracy_on_samples, ev.frechet_judge_features
        else:
            accuracy, what = ev.judge_accuracy_heldout_phrasings, " (held-out phrasings)"
            fd = ev.frechet_judge_features_heldout_phrasings
        found += [
            _spread(f"judge accuracy on samples{what}", "accuracy", accuracy.overall, chosen),
            _spread(f"judge-feature Fréchet distance{what}", "frechet_distance", fd, chosen),
            *_frontier(ev, cas),
        ]
    elif isinstance(ev, CocoEval):
        point = _at(ev.conditions.caption_only.guidance, ev.conditions.caption_only.temperature)
        for name, metric in (("FID", ev.caption_only.fid), ("CLIP-S", ev.caption_only.clip_s)):
            if getattr(metric, "value", None) is not None:
                found.append(
                    Result(
                        f"{name} of caption-only samples", name.lower(), metric.value, None, point
                    )
                )
    if cas is not None:  # at the (sampler, w, T) the evaluation chose
        at = cas.conditions
        where = _at(at.guidance, at.temperature, at.sampler)
        found.append(
            Result("CAS at the chosen point", "cas", cas.accuracy_on_real_test, None, where)
        )
    return found


def _frontier(ev: LabelEval | TextEval, cas: ModelCas | None) -> list[Result]:
    """The most faithful frontier point whose FD is below the plain decoder's (sampler prior,
    w 0, T 1), and the point of lowest FD (docs/guidance.md), each with its CAS when scored
    (the CAS frontier's point of the same sampler, w and T)."""
    points, out = list(ev.frontier), []
    plain = next(
        (q for q in points if (q.sampler, q.guidance, q.temperature) == ("prior", 0, 1)),
        points[0],
    )
    faithful = [q for q in points if q.frechet.mean < plain.frechet.mean]
    scored = {p.point_key(): p.cas for p in (cas.frontier or [])} if cas else {}
    best = max(faithful, key=lambda q: q.accuracy.mean) if faithful else None
    low = min(points, key=lambda q: q.frechet.mean)
    for what, q in (("most faithful point with FD below prior w 0", best), ("lowest FD", low)):
        if q is None or (what == "lowest FD" and q is best):
            continue
        where = _at(q.guidance, q.temperature, q.sampler)
        out += [
            _spread(f"frontier, {what}: judge accuracy", "accuracy", q.accuracy, where),
            _spread(f"frontier, {what}: Fréchet distance", "frechet_distance", q.frechet, where),
        ]
        if q.point_key() in scored:
            value = scored[q.point_key()]
            n = cas.frontier_conditions.training_images
            out.append(Result(f"frontier, {what}: CAS ({n:,} samples)", "cas", value, None, where))
    return out


COCO_CAPTIONS = ["a red bus on a city street", "a cat sleeping on a sofa", "a plate of food"]


def sample_prompts(meta) -> list[str]:
    """What the card's sample grid draws: every class (label and Fashion-MNIST text models,
    by name), or a few everyday captions (COCO)."""
    if meta.data == "coco":
        return COCO_CAPTIONS
    return [label.lower() for label in meta.labels or []]


def card_data(facts: CardFacts) -> ModelCardData:
    """The YAML metadata block."""
    meta = facts.meta
    dataset, dataset_name = DATASETS[meta.data]
    conditioning = "captions" if meta.is_text else "class labels"
    tags = ["text-to-image", "cvae", "conditional-vae", "pytorch", meta.data, conditioning]
    if meta.is_text:
        tags.append(meta.conditioning)
    evals = [
        EvalResult(
            task_type=TASK,
            dataset_type=dataset,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=r.kind,
            metric_value=r.value,
            metric_name=f"{r.name}, {r.point}",
            metric_config=r.point,
            metric_args=None if r.std is None else {"std": r.std},
        )
        for r in results(facts)
    ]
    return ModelCardData(
        model_name=meta.name,
        library_name=LIBRARY,
        pipeline_tag=TASK,
        tags=tags,
        license="other",  # the repository declares no license (pyproject.toml, no LICENSE)
        datasets=[dataset],
        eval_results=evals or None,
    )


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]


def body(facts: CardFacts) -> str:
    """The Markdown below the metadata."""
    meta, entry = facts.meta, facts.entry
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", facts.folder) or "model"
    prompt = sample_prompts(meta)[0] if sample_prompts(meta) else "sneaker"
    kind = f"captions embedded by {meta.conditioning}" if meta.is_text else "class labels"
    c, h, w = meta.image_shape
    lines = [
        f"# {md(meta.name)}",
        "",
        md(entry.summary) if entry is not None else "(no params entry of this name)",
        "",
        f"A conditional VAE of t2i-cvae, a reimplementation of *Text-to-Image Synthesis using "
        f"Conditional-VAE* (Campbell et al.). It is conditioned on {md(kind)} and draws "
        f"{c}x{h}x{w} images of {md(DATASETS[meta.data][1])}.",
        "",
        "![samples](sample.png)",
        "",
        "## Use",
        "",
        "```python",
        "from pipeline.api import grid, load",
        "",
        f'm = load("{folder}")',
        f"images = m.generate([{prompt!r}], n=8, seed=0)",
        'grid(images).save("samples.png")',
        "```",
        "",
        f"or `t2i generate --model {folder} {'--caption' if meta.is_text else '--label'} "
        f"{shlex.quote(' '.join(prompt.replace('`', '').split()))} -n 8 -o samples.png` "
        "with t2i-cvae installed.",
        "",
        sampler_text(meta),
        "",
        "## Training",
        "",
    ]
    rows = [("cond_null_p (share of rows on the null condition)", meta.cond_null_p)]
    if meta.is_text:
        rows += [("encoder weights", meta.encoder_weights), ("encoder sha256", meta.encoder_sha256)]
    if entry is not None:
        rows += [(f"arch.{k}", json.dumps(v)) for k, v in sorted(entry.arch.items())]
        rows += [(f"train.{k}", json.dumps(v)) for k, v in entry.train.model_dump().items()]
        lines += [
            f"cond\\_null\\_p and the encoder from the model's own config.json; arch and train "
            f"from params.yaml's models.{md(meta.name)} at export time.",
            "",
        ]
    lines += _table(("param", "value"), rows)
    lines += ["", "## Metrics", ""]
    found = results(facts)
    if found:
        seeds = getattr(getattr(facts.evaluation, "conditions", None), "sample_seeds", None)
        spread = f"mean ± std over {seeds} sample seeds" if seeds else "value"
        lines += _table(
            ("metric", spread, "sampled at"), [(r.name, r.cell(), r.point) for r in found]
        )
    else:
        lines.append("No metrics yet: `dvc repro` evaluates the model.")
    lines += ["", "## Limitations", "", *(f"- {text}" for text in limitations(meta)), ""]
    lines += [
        "## Upload",
        "",
        f"From the folder that holds `{folder}`: `huggingface-cli upload YOUR_NAME/{folder} "
        f"{folder} .` (your own command; t2i never touches the network).",
        "",
    ]
    return "\n".join(lines)


def sampler_text(meta) -> str:
    """What the card says of the samplers the model offers (pipeline/api.py ``samplers``)."""
    if len(samplers_of(meta)) > 1:
        return (
            "Samplers: `prior` (z from p(z|c), the default) and `expost` (z from the ex-post "
            "latent density, a Gaussian mixture per class over the training images' codes, "
            f'{md(DENSITY_FILE)}): `m.generate(..., sampler="expost")` or '
            "`t2i generate ... --sampler expost`."
        )
    return "Sampler: `prior` only (z from p(z|c)); the model has no ex-post latent density."


def limitations(meta) -> list[str]:
    """What the model cannot do, from what it is."""
    out = []
    if meta.data == "fmnist":
        out.append("Fashion-MNIST only: 28x28 grey images of ten clothing classes.")
    else:
        out.append("Small, blurry images: a CVAE's samples are the mean of its decoder.")
    if meta.is_text:
        out.append(
            "Captions far from its training captions map to embeddings it never saw; "
            "the images then follow the nearest class, or none."
        )
    if not meta.can_guide:
        out.append("Trained without a null condition (cond_null_p 0): it cannot be guided.")
    out.append(
        "The metrics score samples with a judge classifier's features (ours), not Inception: "
        "comparable across this project's runs only."
    )
    return out


def model_card(facts: CardFacts) -> ModelCard:
    """The whole card, parsed back by huggingface_hub (its metadata is validated there)."""
    return ModelCard(f"---\n{card_data(facts).to_yaml()}\n---\n\n{body(facts)}")


# ---------------------------------------------------------------------------- the folder

FILES = ("config.json", "model.safetensors", DENSITY_FILE, ENCODER_FILE, "README.md", "sample.png")


def output_roots(root: Path) -> set[Path]:
    """The top folders of every DVC output that root's dvc.yaml files name (models/, data/,
    metrics/, reports/ ...); models/ always."""
    roots, stack = {root / "models"}, []
    for path in [root / "dvc.yaml", *sorted(root.glob("*/dvc.yaml"))]:
        try:
            stack.append((yaml.safe_load(path.read_text()), path.parent))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
    while stack:
        node, base = stack.pop()
        if isinstance(node, dict):
            base = base / str(node["wdir"]) if isinstance(node.get("wdir"), str) else base
            for key, value in node.items():
                if key in ("outs", "metrics", "plots") and isinstance(value, list):
                    for item in value:
                        name = next(iter(item), "") if isinstance(item, dict) else item
                        top = os.path.relpath(base / str(name), root).split(os.sep)[0]
                        if top not in ("", ".", "..") and not top.startswith("$"):
                            roots.add(root / top)
                stack.append((value, base))
        elif isinstance(node, list):
            stack += [(value, base) for value in node]
    return {r.resolve() for r in roots}


def check_target(model_dir: Path, dest: Path, root: Path, force: bool) -> None:
    """Refuse a destination that is no place for an export, before anything is read."""
    target = dest.resolve()
    for folder in sorted(output_roots(root)):
        if target == folder or folder in target.parents:
            raise PipelineError(
                f"{dest}: inside {folder.name}/, a DVC output folder; export outside the "
                "pipeline's outputs"
            )
    for what, path in (("the model", model_dir), ("the working directory", Path.cwd())):
        if target == path.resolve() or target in path.resolve().parents:
            raise PipelineError(f"{dest}: holds {what}; export into a folder of its own")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise PipelineError(f"{dest}: exists and is no folder; choose another DIR")
    if dest.exists():
        if not force:
            raise PipelineError(f"{dest}: exists; give --force to replace it")
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in FILES)
        if foreign:
            raise PipelineError(f"{dest}: holds {foreign[0]!r}, which no export wrote; kept")
    for name in ("config.json", "model.safetensors", DENSITY_FILE):
        if (model_dir / name).is_symlink():
            raise PipelineError(
                f"{model_dir / name}: is a symlink; export copies a model folder's own files"
            )


def card_facts(meta, entry, metrics_dir: Path, folder: str) -> CardFacts:
    """What the card says of the model ``meta`` describes: its params ``entry`` and its
    metrics under ``metrics_dir`` (metrics/<name>/eval.json, metrics/cas/<name>.json), each
    read through its schema; absent files are no metrics."""
    schema, ev_path = eval_schema(meta), metrics_dir / meta.name / "eval.json"
    evaluation = read_metrics(ev_path, schema) if schema and ev_path.is_file() else None
    cas_path = metrics_dir / "cas" / f"{meta.name}.json"
    cas = read_metrics(cas_path, ModelCas) if cas_path.is_file() else None
    return CardFacts(meta, entry, evaluation, cas, folder)


def _sampling(model, facts: CardFacts) -> dict:
    """The evaluation's chosen (sampler, w, T), else the plain decoder (sampler prior)."""
    chosen = getattr(facts.evaluation, "guidance", None)
    if chosen is None:
        return {"guidance": 0.0, "temperature": 1.0}
    sampler = chosen.sampler if chosen.sampler in model.samplers else "prior"
    if not model.can_guide:
        return {"guidance": 0.0, "temperature": 1.0, "sampler": sampler}
    return {"guidance": chosen.w, "temperature": chosen.temperature, "sampler": sampler}


def write_folder(folder: Path, model_dir: Path, model, facts: CardFacts, embed) -> None:
    """Fill ``folder`` with the export of ``model`` (pipeline.api.Model, loaded from
    ``model_dir``): its files copied and loaded back (the same tensors as the checked
    original; the ex-post density, when config.json records one, checked against the sha256
    there), a text model's encoder params (from ``embed``, params.yaml's section, or the
    folder's own encoder.json), sample.png and README.md. ``folder`` is a temporary one that
    the caller renames into place: a failure leaves no partial export."""
    density = model.meta.has_density
    if density:  # the original: the sha256 config.json records, its shapes and values
        ExPostDensity.load(model_dir / DENSITY_FILE, sha256=model.meta.density_sha256)
    for name in ("config.json", "model.safetensors", *([DENSITY_FILE] if density else [])):
        shutil.copyfile(model_dir / name, folder / name)
    copied, _ = load_model(folder)  # shapes and finite weights again
    original = model.module.state_dict()
    for key, value in copied.state_dict().items():
        if not torch.equal(value, original[key].cpu()):
            raise PipelineError(f"{model_dir}: changed while exporting ({key}); retry")
    if density and sha256_file(folder / DENSITY_FILE) != model.meta.density_sha256:
        raise PipelineError(f"{model_dir / DENSITY_FILE}: changed while exporting; retry")
    if model.meta.is_text:
        spec = encoder_params(model_dir, model.meta.conditioning, embed)
        write_json(folder / ENCODER_FILE, spec.model_dump(mode="json"))
    prompts = sample_prompts(model.meta)
    images = model.generate(prompts, n=8, seed=0, **_sampling(model, facts))
    save_png(grid(images, 8, labels=prompts), folder / "sample.png")
    write_bytes(folder / "README.md", str(model_card(facts)).encode())
