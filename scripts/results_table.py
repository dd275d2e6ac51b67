"""Generate docs/results.md, the Fashion-MNIST results page, from the committed metrics.

    python scripts/results_table.py            # print the page
    python scripts/results_table.py --write    # write docs/results.md and README's results
    python scripts/results_table.py --check    # exit 1 when either is not current

Every number on the page is read from metrics/ (and the judge's threshold from params.yaml);
every sentence that quotes one is a template filled from them, so nothing is typed by hand.
The models are the Fashion-MNIST entries of params.yaml ``models:`` that have an eval.json,
each read through the schema its entry picks (pipeline/metrics.py): label models first (the
paper's model, ``report.paper_model``, before the rest), then text models. Folders of
metrics/ that are no model of params are never read. A bad metrics file (NaN, a string for a
number, a duplicated frontier point, broken JSON) stops the script with one line naming the
file and the key; every string that reaches the page is escaped (pipeline/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.atomic import write_bytes  # noqa: E402
from pipeline.config import Params, load_params  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.metrics import (  # noqa: E402
    Headline,
    JudgeLive,
    LabelEval,
    MeanStd,
    ModelCas,
    RealCas,
    TextEval,
    cell,
    eval_schema,
    read_metrics,
    validate_metrics,
    w_text,
)
from pipeline.report import Raw, Span, Table, markdown, markdown_table, md_image  # noqa: E402

METRICS = Path("metrics")  # paths relative to the repository root (main() goes there)
REPORTS = Path("reports")
PAGE = Path("docs") / "results.md"
README = Path("README.md")
HEADLINE = METRICS / "headline.json"  # the headline, first in `dvc metrics show`
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def code(name: str) -> Span:
    return Span(name, code=True)


def num(value: MeanStd | float | None, digits: int = 3) -> Span:
    return Span(cell(value, digits), num=True)


@dataclass
class Model:
    """One Fashion-MNIST model's validated metrics: its eval.json and its CAS file."""

    name: str
    text: bool  # from its params entry: conditioned on captions
    ev: LabelEval | TextEval
    cas: ModelCas | None

    def frontier_cas(self) -> dict[tuple[str, ...], float]:
        """The CAS of each frontier point (stages/cas.py), by its printed (sampler, w, T)."""
        points = (self.cas and self.cas.frontier) or []
        return {q.point_key(): q.cas for q in points}

    def cas_at_chosen(self) -> float | None:
        """CAS by the headline recipe at the point its evaluation chose."""
        return self.cas and self.cas.accuracy_on_real_test


@dataclass
class Results:
    models: list[Model]
    paper: Model | None  # params report.paper_model, when it has results
    judge: JudgeLive | None
    real_cas: RealCas | None
    min_accuracy: float


def _read_if_there(path: Path, schema):
    return read_metrics(path, schema) if path.is_file() else None


def load(params: Params) -> Results:
    """Every model of params with an eval.json, read through the schema its entry picks."""
    found = []
    for name, entry in params.models.items():
        schema = eval_schema(entry)
        path = METRICS / name / "eval.json"
        if entry.data != "fmnist" or schema is None or not path.is_file():
            continue
        cas = _read_if_there(METRICS / "cas" / f"{name}.json", ModelCas)
        found.append(Model(name, entry.is_text, read_metrics(path, schema), cas))
    if not found:
        raise PipelineError("metrics/: no eval.json of any Fashion-MNIST model of params.yaml")
    paper = params.report.paper_model
    found.sort(key=lambda m: (m.text, m.name != paper, m.name))
    return Results(
        found,
        next((m for m in found if m.name == paper and not m.text), None),
        _read_if_there(METRICS / "judge" / "train" / "metrics.json", JudgeLive),
        _read_if_there(METRICS / "cas" / "real.json", RealCas),
        params.judge.min_accuracy,
    )


def main_table(ms: list[Model]) -> Table:
    def row(label: str, values) -> list:
        return [label, *values]

    def each(get, digits: int = 3) -> list[Span]:
        return [num(get(m), digits) for m in ms]

    def overall(accuracy):
        return accuracy and accuracy.overall

    return Table(
        ["metric", *(code(m.name) for m in ms)],
        [
            row(
                "judge accuracy on samples (labels / training phrasings)",
                each(lambda m: m.ev.samples.overall),
            ),
            row("… on validation phrasings", each(lambda m: overall(m.ev.validation))),
            row("… on held-out phrasings", each(lambda m: overall(m.ev.heldout))),
            row(
                "judge-feature Fréchet distance to the test set",
                each(lambda m: m.ev.samples_frechet, 1),
            ),
            row(
                "CAS: judge CNN trained on samples only (the headline recipe), real test accuracy",
                each(Model.cas_at_chosen),
            ),
            row("test −ELBO (nats/image)", each(lambda m: m.ev.test_nelbo, 1)),
            row("sampling temperature", each(lambda m: m.ev.conditions.temperature, 1)),
            row(
                "guidance w (chosen on validation data; the rows above use it)",
                each(lambda m: m.ev.conditions.guidance, 1),
            ),
            row(
                "sampler (chosen with w): prior p(z|c), or expost, the ex-post latent density",
                [Span(m.ev.conditions.sampler) for m in ms],
            ),
        ],
    )


def real_per_class(ms: list[Model]) -> dict[str, float]:
    """The judge on real test images, per class (in every label model's eval.json)."""
    return next((m.ev.judge_accuracy_on_real_test_per_class for m in ms if not m.text), {})


def per_class_table(ms: list[Model]) -> Table:
    real = real_per_class(ms)
    classes = sorted({c for m in ms for c in m.ev.per_class} | set(real))
    head = ["class"] + (["judge on real test images"] if real else [])
    head += [(code(m.name), ", held-out phrasings" if m.text else ", samples") for m in ms]
    rows = []
    for c in classes:
        cells = [num(real.get(c), 2)] if real else []
        per = [m.ev.per_class.get(c) for m in ms]
        rows.append([c, *cells, *(num(v and v.mean, 2) for v in per)])
    return Table(head, rows)


def frontier_table(m: Model) -> list[str]:
    by_point = m.frontier_cas()
    head = ["sampler", "w", "T", "accuracy", "FD", "spread"] + (["CAS"] if by_point else [])
    rows = []
    for q in m.ev.frontier:
        row = [q.sampler, w_text(q.guidance), w_text(q.temperature)]
        row += [num(q.accuracy), num(q.frechet, 1)]
        row += [num(q.spread)] + ([num(by_point.get(q.point_key()))] if by_point else [])
        rows.append(row)
    spread = "** (mean ± std where the point has a spread over sample seeds):"
    lines = [markdown(Raw("**"), code(m.name), Raw(spread))]
    lines += ["", *markdown_table(Table(head, rows, numeric_from=1))]
    if by_point:
        n = m.cas.frontier_conditions.training_images
        lines += [
            "",
            f"CAS: the judge's CNN trained on {n:,} samples of that point only (fewer than the "
            "headline CAS above, so it reads lower), tested on the real test set.",
        ]
    chosen = m.ev.guidance
    where = f"{chosen.sampler}, w {w_text(chosen.w)}, T {w_text(chosen.temperature)}"
    return [*lines, "", f"Chosen on validation data: {where}."]


def _versus(a: MeanStd, b: MeanStd) -> str:
    """How sample accuracy a compares with b, against two sampling stds of either."""
    if abs(a.mean - b.mean) <= 2 * max(a.std, b.std):
        return "within two sampling stds of it"
    return ("above" if a.mean > b.mean else "below") + " it by more than two sampling stds"


def reading(r: Results) -> list[str]:
    """The reading paragraphs: every number in them comes from the metrics."""
    ms, out = r.models, []
    if r.judge:
        out.append(
            f"**The judge** reaches {cell(r.judge.test.accuracy, 3)} on the real test set "
            f"(the stage fails below `judge.min_accuracy`, {r.min_accuracy})."
        )
    base = r.paper
    if base:
        b, says = base.ev.samples.overall, []
        for m in ms:
            if m is base:
                continue
            a, fd = m.ev.samples.overall, Raw("")
            mine, theirs = m.ev.samples_frechet, base.ev.samples_frechet
            better = "lower" if mine.mean < theirs.mean else "higher"
            fd = Raw(f", with a {better} Fréchet distance ({cell(mine, 1)} vs {cell(theirs, 1)})")
            what = "training phrasings" if m.text else "samples"
            says.append(
                markdown(code(m.name), Raw(f" ({what}) scores {cell(a, 3)}, {_versus(a, b)}"), fd)
                + "."
            )
        out.append(
            markdown(
                Raw("**Against the baseline.** The paper's §2.1 model ("),
                code(base.name),
                Raw(f") scores {cell(b, 3)} on samples. "),
            )
            + " ".join(says)
        )
    best = min(ms, key=lambda m: m.ev.samples_frechet.mean)
    line = markdown(
        Raw("The lowest Fréchet distance is "),
        code(best.name),
        Raw(f"'s ({cell(best.ev.samples_frechet, 1)})"),
    )
    if base:
        floor = cell(base.ev.frechet_real_vs_real, 1)
        line += f"; two halves of the real test set are {floor} apart, the floor"
    out.append(line + ".")
    out += _per_class_reading(ms) + _cas_reading(r, best) + _text_reading(ms)
    return out


def _per_class_reading(ms: list[Model]) -> list[str]:
    classes = sorted({c for m in ms for c in m.ev.per_class})
    if not classes or not all(set(m.ev.per_class) == set(classes) for m in ms):
        return []
    real = real_per_class(ms)
    avg = {c: sum(m.ev.per_class[c].mean for m in ms) / len(ms) for c in classes}
    parts = []
    for c in sorted(classes, key=avg.get)[:2]:
        vals = [m.ev.per_class[c].mean for m in ms]
        ceiling = f"; the judge on real ones {cell(real[c], 2)}" if c in real else ""
        parts.append(markdown(c, Raw(f" ({cell(min(vals), 2)}–{cell(max(vals), 2)}{ceiling})")))
    return [
        "**Per class**, the two weakest classes averaged over the models are "
        + " and ".join(parts)
        + " (the range is over the models' columns of the per-class table)."
    ]


def _cas_reading(r: Results, lowest_fd: Model) -> list[str]:
    cas = [m for m in r.models if m.cas]
    if not cas:
        return []
    top = max(cas, key=lambda m: m.cas.accuracy_on_real_test)
    line = markdown(
        Raw("**CAS**: the same CNN trained on each model's samples alone scores highest for "),
        code(top.name),
        Raw(f" ({cell(top.cas.accuracy_on_real_test, 3)})"),
    )
    if r.real_cas:
        line += f", against {cell(r.real_cas.accuracy_on_real_test, 3)} trained on real images"
    line += "."
    low = min(cas, key=lambda m: m.cas.accuracy_on_real_test)
    if low is lowest_fd:
        line += " " + markdown(
            code(low.name),
            Raw(
                f" has both the lowest Fréchet distance and the lowest CAS "
                f"({cell(low.cas.accuracy_on_real_test, 3)}): its samples match the test set's "
                "feature statistics on the whole while each class's samples cover less of that "
                "class than the other models' do."
            ),
        )
    return [line]


def best_heldout(ms: list[Model]) -> Model | None:
    """The text model whose held-out phrasings score highest at its validation-chosen w."""
    texts = [m for m in ms if m.text]
    return max(texts, key=lambda m: m.ev.heldout.overall.mean) if texts else None


def _text_reading(ms: list[Model]) -> list[str]:
    best = best_heldout(ms)
    if best is None:
        return []
    line = markdown(
        Raw(
            "**Text generalisation**: on held-out phrasings, never trained on nor used to "
            "choose anything, "
        ),
        code(best.name),
        Raw(f" scores {cell(best.ev.heldout.overall, 3)}"),
    )
    others = [m for m in ms if m.text and m is not best]
    if others:
        line += " against " + ", ".join(
            markdown(Raw(f"{cell(m.ev.heldout.overall, 3)} for "), code(m.name)) for m in others
        )
    return [
        line
        + markdown(
            Raw(
                ". Held-out accuracy is bounded by the model's accuracy on its training "
                f"phrasings ({cell(best.ev.samples.overall, 3)} for "
            ),
            code(best.name),
            Raw(")."),
        )
    ]


def _point(m: Model, at: tuple, tail: str = "") -> tuple:
    """(model, sampler, w, T) as the results print it; ``at``: (sampler, w, T)."""
    sampler, w, t = at
    return ("(", code(m.name), f", {sampler}, w {w_text(w)}, T {w_text(t)}{tail})")


def brief(r: Results) -> list[str]:
    """The headline rows: the real-data ceilings, the paper's model, the best model at its
    validation-chosen point (BEST_RULE; CAS by the same recipe as the two above), the most
    faithful point of any label model's frontier whose FD is below the paper model's (its CAS
    by the frontier's cheaper recipe, labelled), and the text model best on held-out phrasings.
    Every number comes from the metrics."""
    base = r.paper
    if base is None:
        return []
    rows = []
    if r.judge and r.real_cas:
        ceiling = "real test images: the judge; a CNN trained on real images ("
        rows.append(
            [
                (ceiling, code("cas_real"), ")"),
                num(r.judge.test.accuracy),
                num(None),
                num(r.real_cas.accuracy_on_real_test),
            ]
        )
    c = base.ev.conditions
    rows.append(
        [
            ("the paper's §2.1 model ", *_point(base, (c.sampler, c.guidance, c.temperature))),
            num(base.ev.samples.overall),
            num(base.ev.samples_frechet, 1),
            num(base.cas and base.cas.accuracy_on_real_test),
        ]
    )
    best = best_model(r)
    if best is not None and best is not base:
        k = best.ev.conditions
        rows.append(
            [
                (
                    "the best model at its validation-chosen point ",
                    *_point(best, (k.sampler, k.guidance, k.temperature)),
                ),
                num(best.ev.samples.overall),
                num(best.ev.samples_frechet, 1),
                num(best.cas_at_chosen()),
            ]
        )
    bar = base.ev.samples_frechet.mean
    faithful = [
        (q, m) for m in r.models if not m.text for q in m.ev.frontier if q.frechet.mean < bar
    ]
    if faithful:
        q, m = max(faithful, key=lambda t: t[0].accuracy.mean)
    chosen = best and best.ev.conditions
    if faithful and not (
        m is best
        and (q.sampler, q.guidance, q.temperature)
        == (chosen.sampler, chosen.guidance, chosen.temperature)
    ):  # (the best model's chosen point is its row above)
        cas = m.frontier_cas().get(q.point_key())
        n = m.cas.frontier_conditions.training_images if cas is not None else None
        what = "the most faithful frontier point with FD below the paper model's "
        shown = Span(cell(cas, 3) + (f" ({n:,} samples)" if n else ""), num=True)
        rows.append(
            [
                (what, *_point(m, (q.sampler, q.guidance, q.temperature))),
                num(q.accuracy),
                num(q.frechet, 1),
                shown,
            ]
        )
    m = best_heldout(r.models)
    if m is not None:
        held = ("held-out phrasings, never seen in training (", code(m.name))
        rows.append(
            [
                (*held, f", {m.ev.conditions.sampler}, w {w_text(m.ev.conditions.guidance)})"),
                num(m.ev.heldout.overall),
                num(m.ev.heldout_frechet, 1),
                num(m.cas_at_chosen()),
            ]
        )
    head = ["what", "judge accuracy on samples", "judge-feature FD", "CAS"]
    return markdown_table(Table(head, rows))


BEST_RULE = (
    "among the models' validation-chosen points, the one that beats the paper's model on the "
    "most of judged accuracy, FD and CAS (ties: the higher judged accuracy)"
)


def _headline_point(m: Model, cas: float | None, held: bool = False) -> dict:
    c = m.ev.conditions
    point = {"model": m.name, "sampler": c.sampler, "guidance": c.guidance}
    point |= {"temperature": c.temperature, "cas": cas}
    if held:
        return point | {"accuracy": m.ev.heldout.overall.model_dump()}
    return point | {
        "accuracy": m.ev.samples.overall.model_dump(),
        "fd": m.ev.samples_frechet.model_dump(),
    }


def _wins(m: Model, paper: Model) -> tuple[int, float]:
    """(on how many of accuracy, FD, CAS m's chosen point beats the paper's model, accuracy)."""
    mine, theirs = m.ev.samples.overall.mean, paper.ev.samples.overall.mean
    cas, paper_cas = m.cas_at_chosen(), paper.cas_at_chosen()
    wins = (mine > theirs) + (m.ev.samples_frechet.mean < paper.ev.samples_frechet.mean)
    wins += cas is not None and paper_cas is not None and cas > paper_cas
    return wins, mine


def best_model(r: Results) -> Model | None:
    """The label model whose validation-chosen point beats the paper's model on the most of
    judged accuracy, FD and CAS (BEST_RULE); the paper's model when it is the only one."""
    if r.paper is None:
        return None
    others = [m for m in r.models if m is not r.paper and not m.text] or [r.paper]
    return max(others, key=lambda m: _wins(m, r.paper))


def headline(r: Results) -> Headline | None:
    """metrics/headline.json from the validated metrics (None: a run without its parts)."""
    if r.paper is None or r.judge is None or r.real_cas is None:
        return None
    k = r.real_cas.conditions
    recipe = (
        f"{k.epochs} epochs, {k.lr_schedule} at lr {k.lr:g}"
        + (", bf16 autocast" if k.amp else "")
        + f", on {k.training_images:,} images"
        if k.lr is not None
        else f"{k.epochs} epoch(s); schedule not recorded (a run before the recipe was)"
    )
    best = best_model(r)
    held = best_heldout(r.models)
    value = {
        "judge_accuracy": r.judge.test.accuracy,
        "cas_real": r.real_cas.accuracy_on_real_test,
        "cas_recipe": recipe,
        "paper": _headline_point(r.paper, r.paper.cas_at_chosen()),
        "best": _headline_point(best, best.cas_at_chosen()),
        "heldout": held and _headline_point(held, held.cas_at_chosen(), held=True),
        "best_rule": BEST_RULE,
    }
    return validate_metrics(value, str(HEADLINE), Headline, "nothing written")


def readme(text: str, rows: list[str]) -> str:
    """``text`` (the README) with the lines between its markers replaced by ``rows``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise PipelineError(
            f"README.md: expected exactly one {BEGIN} ... {END} block for the results"
        )
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + BEGIN + "\n" + "\n".join(rows) + "\n" + END + tail


def figures(params: Params) -> list[str]:
    """Each model's figures in reports/<model>/ (folders of no model are never listed)."""
    lines = []
    pngs = sorted(p for name in params.models for p in (REPORTS / name).glob("*.png"))
    for png in pngs:
        rel = png.as_posix()
        image = md_image(f"{png.parent.name}/{png.stem}", f"../{rel}")
        lines += [markdown(code(rel), Raw(":")), "", image, ""]
    return lines


def page(r: Results, params: Params) -> str:
    conds = r.models[0].ev.conditions
    out = [
        "# Results (Fashion-MNIST, full default run, CPU)",
        "",
        "<!-- Generated by `python scripts/results_table.py --write` from metrics/: do not edit;",
        "     tests/test_docs.py fails when this page is not current. -->",
        "",
        "From `dvc repro` with the default params, in `metrics/` and `reports/` of this commit. "
        f"Sample metrics are mean ± std over {conds.sample_seeds} sample seeds at "
        f"temperature {conds.temperature}. On one machine reruns are bit-identical; how "
        'far numbers move across machines and judges is under "Reading a `dvc metrics diff`" '
        "in [pipeline.md](pipeline.md#comparing-runs-and-commits).",
        "",
        *markdown_table(main_table(r.models)),
    ]
    if r.real_cas:
        judged = cell(r.judge and r.judge.test.accuracy, 3)
        out += [
            "",
            f"The same CNN trained on the real training images (cas_real): "
            f"{cell(r.real_cas.accuracy_on_real_test, 3)}. The judge on the real test set: "
            f"{judged}.",
        ]
    out += ["", "## In brief", "", *brief(r), "", "## Reading", ""]
    for paragraph in reading(r):
        out += [paragraph, ""]
    out += [
        "What was tried to improve these, and the goals missed: [experiments.md](experiments.md).",
        "",
        "## Per class",
        "",
        "The judge's accuracy per class on real test images (in each label model's `eval.json`, "
        "`judge_accuracy_on_real_test_per_class`) beside its accuracy on each model's samples "
        "(means over the sample seeds):",
        "",
        *markdown_table(per_class_table(r.models)),
        "",
        "## Guidance frontier",
        "",
        "Each point: guidance weight w and temperature T, and what the samples score.",
        "",
    ]
    for m in r.models:
        out += [*frontier_table(m), ""]
    out += ["## Figures", "", *figures(params)]
    return "\n".join(out).rstrip() + "\n"


def _headline_text(top: Headline | None) -> str | None:
    return None if top is None else json.dumps(top.model_dump(), indent=2) + "\n"


def _stale(text: str, brief_readme: str | None, current: str | None, top: str | None) -> list:
    pairs = (
        ("docs/results.md", PAGE.is_file() and PAGE.read_text() == text),
        ("README.md", brief_readme is None or brief_readme == current),
        (str(HEADLINE), top is None or (HEADLINE.is_file() and HEADLINE.read_text() == top)),
    )
    return [name for name, ok in pairs if not ok]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write docs/results.md")
    group.add_argument("--check", action="store_true", help="exit 1 if docs/results.md is stale")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    try:
        params = load_params("params.yaml")
        results = load(params)
        text = page(results, params)
        current = README.read_text() if README.is_file() else None
        link = "Every model, per class and the whole frontier: [results](docs/results.md)."
        brief_readme = readme(current, [*brief(results), "", link]) if current else None
        top = _headline_text(headline(results))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.write:
        write_bytes(PAGE, text.encode())
        if top is not None:
            write_bytes(HEADLINE, top.encode())
        if brief_readme is not None and brief_readme != current:
            write_bytes(README, brief_readme.encode())
    elif args.check:
        stale = _stale(text, brief_readme, current, top)
        if stale:
            print(
                f"error: {' and '.join(stale)} {'is' if len(stale) == 1 else 'are'} not current "
                "with metrics/: run python scripts/results_table.py --write",
                file=sys.stderr,
            )
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
