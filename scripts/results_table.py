"""Generate docs/results.md, the Fashion-MNIST results page, from the committed metrics.

    python scripts/results_table.py            # print the page
    python scripts/results_table.py --write    # write docs/results.md and README's results
    python scripts/results_table.py --check    # exit 1 when either is not current

Every number on the page is read from metrics/ (and the judge's threshold from params.yaml);
every sentence that quotes one is a template filled from them, so nothing is typed by hand.
The models are the folders of metrics/ whose eval.json holds Fashion-MNIST sample metrics:
label models first (the paper's §2.1 model before the rest), then text models. A number with
a spread over sample seeds prints as mean ± std. Keys this script does not know are ignored;
an eval.json with a guidance frontier (``frontier``: a list of points, ``guidance``: the
chosen one) gets a frontier table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.atomic import write_bytes  # noqa: E402

METRICS = ROOT / "metrics"
REPORTS = ROOT / "reports"
PAGE = ROOT / "docs" / "results.md"
BASELINE = "fmnist_label"  # the paper's §2.1 model

# (heading, accepted key names) of a frontier point's columns, in the order they print
FRONTIER_COLUMNS = [
    ("w", ("w", "guidance", "guidance_scale", "scale")),
    ("T", ("T", "temperature")),
    ("accuracy", ("accuracy", "judge_accuracy", "judge_accuracy_on_samples")),
    ("FD", ("FD", "fd", "frechet", "frechet_judge_features")),
    ("spread", ("spread", "diversity", "within_class_spread")),
]


CAS_KEY = "cas (metrics/cas)"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _mean(value) -> float | None:
    if isinstance(value, dict):
        value = value.get("mean", value.get("overall"))
        return _mean(value)
    return value


def cell(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"
    if isinstance(value, dict) and "overall" in value:
        return cell(value["overall"], digits)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"`{json.dumps(value)}`" if not isinstance(value, str) else value
    return f"{value:.{digits}f}"


class Model:
    """One Fashion-MNIST model's metrics: its eval.json and its CAS file."""

    def __init__(self, name: str, ev: dict):
        self.name, self.ev = name, ev
        self.text = "judge_accuracy_train_phrasings" in ev
        self.cas = _load(METRICS / "cas" / f"{name}.json") or {}
        # CAS of each frontier point (stages/cas.py), by (w, T)
        self.frontier_cas = {
            (q["guidance"], q["temperature"]): q["cas"] for q in self.cas.get("frontier", [])
        }
        suffix = "_train_phrasings" if self.text else ""
        self.sampled = ev.get(
            "judge_accuracy_train_phrasings" if self.text else "judge_accuracy_on_samples"
        )
        self.frechet = ev.get("frechet_judge_features" + suffix)
        self.val = ev.get("judge_accuracy_val_phrasings")
        self.heldout = ev.get("judge_accuracy_heldout_phrasings")

    @property
    def per_class(self) -> dict:
        """Per-class sample accuracy: held-out phrasings for a text model, else samples."""
        source = self.heldout if self.text else self.sampled
        return (source or {}).get("per_class", {})

    def rows(self) -> dict[str, str]:
        return {
            "judge accuracy on samples (labels / training phrasings)": cell(
                self.sampled and self.sampled["overall"]
            ),
            "… on validation phrasings": cell(self.val and self.val["overall"]),
            "… on held-out phrasings": cell(self.heldout and self.heldout["overall"]),
            "judge-feature Fréchet distance to the test set": cell(self.frechet, 1),
            "CAS at w = 0: judge CNN trained on samples only, real test accuracy": cell(
                self.cas.get("accuracy_on_real_test")
            ),
            "CAS at the chosen w": cell(
                (self.cas.get("at_chosen_guidance") or {}).get("accuracy_on_real_test")
            ),
            "test −ELBO (nats/image)": cell(self.ev.get("test_nelbo_nats"), 1),
            "sampling temperature": cell(self.ev.get("conditions", {}).get("temperature"), 1),
            "guidance w (chosen on validation data; the rows above use it)": cell(
                self.ev.get("conditions", {}).get("guidance"), 1
            ),
        }


def models() -> list[Model]:
    found = []
    for path in sorted(METRICS.glob("*/eval.json")):
        ev = _load(path)
        if "judge_accuracy_on_samples" in ev or "judge_accuracy_train_phrasings" in ev:
            found.append(Model(path.parent.name, ev))
    return sorted(found, key=lambda m: (m.text, m.name != BASELINE, m.name))


def main_table(ms: list[Model]) -> list[str]:
    table = {m.name: m.rows() for m in ms}
    lines = ["| metric | " + " | ".join(f"`{m.name}`" for m in ms) + " |"]
    lines.append("|---|" + "---:|" * len(ms))
    for row in table[ms[0].name]:
        lines.append("| " + " | ".join([row, *(table[m.name][row] for m in ms)]) + " |")
    return lines


def per_class_table(ms: list[Model], real: dict) -> list[str]:
    classes = sorted({c for m in ms for c in m.per_class} | set(real))
    heads = ["class"] + (["judge on real test images"] if real else [])
    heads += [f"`{m.name}`, {'held-out phrasings' if m.text else 'samples'}" for m in ms]
    lines = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]
    for c in classes:
        cells = [cell(real.get(c), 2)] if real else []
        cells += [cell(_mean(m.per_class.get(c)), 2) for m in ms]
        lines.append("| " + " | ".join([c, *cells]) + " |")
    return lines


def frontier_table(m: Model) -> list[str]:
    points = m.ev["frontier"]
    keys = list(dict.fromkeys(k for p in points for k in p))
    columns, used = [], set()
    for head, names in FRONTIER_COLUMNS:
        key = next((n for n in names if n in keys), None)
        if key is not None:
            columns.append((head, key))
            used.add(key)
    # CAS of each point, matched by (w, T): one column after the spread
    by_point = m.frontier_cas
    w_key, t_key = (dict(columns).get(h) for h in ("w", "T"))
    if by_point and w_key and t_key:
        points = [{**p, CAS_KEY: by_point.get((p[w_key], p[t_key]))} for p in points]
        columns.append(("CAS", CAS_KEY))
        used.add(CAS_KEY)
    columns += [(k, k) for k in keys if k not in used]
    lines = [f"**`{m.name}`** (mean ± std where the point has a spread over sample seeds):", ""]
    lines.append("| " + " | ".join(head for head, _ in columns) + " |")
    lines.append("|" + "---:|" * len(columns))
    for p in points:
        digits = {"FD": 1, "w": 2, "T": 2}
        lines.append("| " + " | ".join(cell(p.get(k), digits.get(h, 3)) for h, k in columns) + " |")
    if by_point:
        n = m.cas.get("frontier_conditions", {}).get("training_images")
        lines += [
            "",
            f"CAS: the judge's CNN trained on {n:,} samples of that point only (fewer than the "
            "headline CAS above, so it reads lower), tested on the real test set.",
        ]
    if "guidance" in m.ev:
        lines += ["", f"Chosen: {cell(m.ev['guidance'], 2)}."]
    return lines


def _versus(a: dict, b: dict) -> str:
    """How sample accuracy a compares with b, against two sampling stds of either."""
    if abs(a["mean"] - b["mean"]) <= 2 * max(a["std"], b["std"]):
        return "within two sampling stds of it"
    return ("above" if a["mean"] > b["mean"] else "below") + " it by more than two sampling stds"


def reading(
    ms: list[Model], judge: dict | None, real: dict | None, real_cas: dict | None, min_acc
) -> list[str]:
    """The reading paragraphs: every number in them comes from the metrics."""
    out = []
    if judge:
        out.append(
            f"**The judge** reaches {cell(judge['test']['accuracy'])} on the real test set "
            f"(the stage fails below `judge.min_accuracy`, {min_acc})."
        )
    base = next((m for m in ms if m.name == BASELINE), None)
    if base and base.sampled:
        b = base.sampled["overall"]
        says = []
        for m in ms:
            if m is base or not m.sampled:
                continue
            a = m.sampled["overall"]
            fd = ""
            if m.frechet and base.frechet:
                better = "lower" if m.frechet["mean"] < base.frechet["mean"] else "higher"
                pair = f"{cell(m.frechet, 1)} vs {cell(base.frechet, 1)}"
                fd = f", with a {better} Fréchet distance ({pair})"
            what = "training phrasings" if m.text else "samples"
            says.append(f"`{m.name}` ({what}) scores {cell(a)}, {_versus(a, b)}{fd}.")
        out.append(
            f"**Against the baseline.** The paper's §2.1 model (`{BASELINE}`) scores "
            f"{cell(b)} on samples. " + " ".join(says)
        )
    floor = base and base.ev.get("frechet_real_vs_real")
    scored = [m for m in ms if m.frechet]
    if scored:
        best = min(scored, key=lambda m: m.frechet["mean"])
        line = f"The lowest Fréchet distance is `{best.name}`'s ({cell(best.frechet, 1)})"
        if floor:
            line += f"; two halves of the real test set are {cell(floor, 1)} apart, the floor"
        out.append(line + ".")
    classes = sorted({c for m in ms for c in m.per_class})
    if classes and all(m.per_class for m in ms):
        avg = {c: sum(_mean(m.per_class[c]) for m in ms) / len(ms) for c in classes}
        weak = sorted(classes, key=avg.get)[:2]
        parts = []
        for c in weak:
            vals = [_mean(m.per_class[c]) for m in ms]
            ceiling = f"; the judge on real ones {cell(real[c], 2)}" if real else ""
            parts.append(f"{c} ({cell(min(vals), 2)}–{cell(max(vals), 2)}{ceiling})")
        out.append(
            "**Per class**, the two weakest classes averaged over the models are "
            + " and ".join(parts)
            + " (the range is over the models' columns of the per-class table)."
        )
    cas = [m for m in ms if m.cas.get("accuracy_on_real_test") is not None]
    if cas:
        top = max(cas, key=lambda m: m.cas["accuracy_on_real_test"])
        line = (
            f"**CAS**: the same CNN trained on each model's samples alone scores highest for "
            f"`{top.name}` ({cell(top.cas['accuracy_on_real_test'])})"
        )
        if real_cas:
            line += f", against {cell(real_cas['accuracy_on_real_test'])} trained on real images"
        line += "."
        low = min(cas, key=lambda m: m.cas["accuracy_on_real_test"])
        if scored and low is min(scored, key=lambda m: m.frechet["mean"]):
            line += (
                f" `{low.name}` has both the lowest Fréchet distance and the lowest CAS "
                f"({cell(low.cas['accuracy_on_real_test'])}): its samples match the test set's "
                "feature statistics on the whole while each class's samples cover less of that "
                "class than the other models' do."
            )
        out.append(line)
    texts = [m for m in ms if m.text and m.heldout]
    if texts:
        best = max(texts, key=lambda m: m.heldout["overall"]["mean"])
        line = (
            f"**Text generalisation**: on held-out phrasings, never trained on nor used to "
            f"choose anything, `{best.name}` scores {cell(best.heldout['overall'])}"
        )
        others = [m for m in texts if m is not best]
        if others:
            line += " against " + ", ".join(
                f"{cell(m.heldout['overall'])} for `{m.name}`" for m in others
            )
        line += (
            f". Held-out accuracy is bounded by the model's accuracy on its training "
            f"phrasings ({cell(best.sampled['overall'])} for `{best.name}`)."
        )
        out.append(line)
    return out


def _point_name(m: Model, q: dict) -> str:
    return f"`{m.name}`, w {q['guidance']:g}, T {q['temperature']:g}"


def brief(ms: list[Model], judge: dict | None, real_cas: dict | None) -> list[str]:
    """The headline rows: the real-data ceilings, the paper's model, the most faithful point of
    any label model's frontier whose FD is below the paper model's, the highest CAS, and
    held-out phrasings. Every number comes from the metrics."""
    base = next((m for m in ms if m.name == BASELINE and m.sampled), None)
    if base is None:
        return []
    rows = [
        "| what | judge accuracy on samples | judge-feature FD | CAS |",
        "|---|---:|---:|---:|",
    ]
    if judge and real_cas:
        rows.append(
            f"| real test images: the judge; a CNN trained on real images (`cas_real`) "
            f"| {cell(judge['test']['accuracy'])} | – | "
            f"{cell(real_cas['accuracy_on_real_test'])} |"
        )
    rows.append(
        f"| the paper's §2.1 model (`{base.name}`, w 0, T 1) | {cell(base.sampled['overall'])} | "
        f"{cell(base.frechet, 1)} | {cell(base.cas.get('accuracy_on_real_test'))} |"
    )
    bar = base.frechet["mean"]
    faithful = [
        (q["accuracy"]["mean"], m, q)
        for m in ms
        if not m.text
        for q in m.ev.get("frontier", [])
        if q["frechet"]["mean"] < bar
    ]
    if faithful:
        _, m, q = max(faithful, key=lambda t: t[0])
        cas = m.frontier_cas.get((q["guidance"], q["temperature"]))
        n = m.cas.get("frontier_conditions", {}).get("training_images")
        rows.append(
            f"| the most faithful frontier point with FD below the paper model's "
            f"({_point_name(m, q)}) | {cell(q['accuracy'])} | {cell(q['frechet'], 1)} | "
            f"{cell(cas)}{f' ({n:,} samples)' if cas is not None else ''} |"
        )
    headline = [
        (c["accuracy_on_real_test"], m, c)
        for m in ms
        for c in (m.cas, m.cas.get("at_chosen_guidance") or {})
        if "accuracy_on_real_test" in c
    ]
    if headline:
        value, m, c = max(headline, key=lambda t: t[0])
        w, t, n = (c["conditions"][k] for k in ("guidance", "temperature", "training_images"))
        rows.append(
            f"| the highest CAS (`{m.name}`, w {w:g}, T {t:g}; {n:,} samples) | – | – | "
            f"{cell(value)} |"
        )
    for m in ms:
        if m.text and m.heldout and m.name != "fmnist_text":
            w = m.ev.get("conditions", {}).get("guidance")
            rows.append(
                f"| held-out phrasings, never seen in training (`{m.name}`, w {w:g}) | "
                f"{cell(m.heldout['overall'])} | "
                f"{cell(m.ev.get('frechet_judge_features_heldout_phrasings'), 1)} | "
                f"{cell((m.cas.get('at_chosen_guidance') or m.cas).get('accuracy_on_real_test'))} |"
            )
    return rows


README = ROOT / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def readme(text: str, rows: list[str]) -> str:
    """``text`` (the README) with the lines between its markers replaced by ``rows``."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: README.md: no {BEGIN} ... {END} block for the results")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + BEGIN + "\n" + "\n".join(rows) + "\n" + END + tail


def figures() -> list[str]:
    lines = []
    for png in sorted(REPORTS.glob("*/*.png")):
        rel = png.relative_to(ROOT).as_posix()
        lines += [f"`{rel}`:", "", f"![{png.parent.name}/{png.stem}](../{rel})", ""]
    return lines


def load() -> tuple[list[Model], dict | None, dict | None]:
    """(the models, the judge's training metrics, cas_real's metrics), read once."""
    ms = models()
    if not ms:
        raise SystemExit("error: metrics/: no Fashion-MNIST eval.json found")
    judge = _load(METRICS / "judge" / "train" / "metrics.json")
    return ms, judge, _load(METRICS / "cas" / "real.json")


def page(ms: list[Model], judge: dict | None, real_cas: dict | None) -> str:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    min_acc = params["judge"]["min_accuracy"]
    real = next((m.ev["judge_accuracy_on_real_test_per_class"] for m in ms if not m.text), {})
    conds = ms[0].ev.get("conditions", {})
    out = [
        "# Results (Fashion-MNIST, full default run, CPU)",
        "",
        "<!-- Generated by `python scripts/results_table.py --write` from metrics/: do not edit;",
        "     tests/test_docs.py fails when this page is not current. -->",
        "",
        "From `dvc repro` with the default params, in `metrics/` and `reports/` of this commit. "
        f"Sample metrics are mean ± std over {conds.get('sample_seeds')} sample seeds at "
        f"temperature {conds.get('temperature')}. On one machine reruns are bit-identical; how "
        'far numbers move across machines and judges is under "Reading a `dvc metrics diff`" '
        "in [pipeline.md](pipeline.md#comparing-runs-and-commits).",
        "",
        *main_table(ms),
    ]
    if real_cas:
        judged = cell(judge and judge["test"]["accuracy"])
        out += [
            "",
            f"The same CNN trained on the real training images (cas_real): "
            f"{cell(real_cas['accuracy_on_real_test'])}. The judge on the real test set: {judged}.",
        ]
    out += ["", "## In brief", "", *brief(ms, judge, real_cas)]
    out += ["", "## Reading", ""]
    for paragraph in reading(ms, judge, real, real_cas, min_acc):
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
        *per_class_table(ms, real),
    ]
    frontier = [m for m in ms if m.ev.get("frontier")]
    if frontier:
        out += ["", "## Guidance frontier", ""]
        out += ["Each point: guidance weight w and temperature T, and what the samples score.", ""]
        for m in frontier:
            out += [*frontier_table(m), ""]
        out.pop()
    out += ["", "## Figures", "", *figures()]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write docs/results.md")
    group.add_argument("--check", action="store_true", help="exit 1 if docs/results.md is stale")
    args = ap.parse_args(argv)
    loaded = load()
    text = page(*loaded)
    current = README.read_text() if README.is_file() else None
    rows = [
        *brief(*loaded),
        "",
        "Every model, per class and the whole frontier: [results](docs/results.md).",
    ]
    brief_readme = readme(current, rows) if current is not None else None
    if args.write:
        PAGE.parent.mkdir(exist_ok=True)
        write_bytes(PAGE, text.encode())
        if brief_readme is not None and brief_readme != current:
            write_bytes(README, brief_readme.encode())
    elif args.check:
        stale = [
            name
            for name, ok in (
                ("docs/results.md", PAGE.is_file() and PAGE.read_text() == text),
                ("README.md", brief_readme is None or brief_readme == current),
            )
            if not ok
        ]
        if stale:
            print(
                f"error: {' and '.join(stale)} {'is' if len(stale) == 1 else 'are'} not current "
                "with metrics/: run "
                "python scripts/results_table.py --write",
                file=sys.stderr,
            )
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
