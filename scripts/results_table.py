"""Print the README's Fashion-MNIST results table from the committed metrics, as markdown.

    python scripts/results_table.py

One column per model that has metrics (the paper's §2.1 model first), one row per metric;
numbers with a spread over sample seeds print as mean ± std. Nothing is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.models.registry import GENERATIVE  # noqa: E402

METRICS = ROOT / "metrics"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cell(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"
    return f"{value:.{digits}f}"


def rows_of(name: str) -> dict[str, str]:
    ev = _load(METRICS / name / "eval.json") or {}
    cas = _load(METRICS / "cas" / f"{name}.json") or {}
    sampled = ev.get("judge_accuracy_on_samples") or ev.get("judge_accuracy_train_phrasings")
    frechet = ev.get("frechet_judge_features") or ev.get("frechet_judge_features_train_phrasings")
    heldout = ev.get("judge_accuracy_heldout_phrasings")
    val = ev.get("judge_accuracy_val_phrasings")
    return {
        "judge accuracy on samples (labels / training phrasings)": cell(
            sampled and sampled["overall"]
        ),
        "… on validation phrasings": cell(val and val["overall"]),
        "… on held-out phrasings": cell(heldout and heldout["overall"]),
        "judge-feature Fréchet distance to the test set": cell(frechet, 1),
        "CAS: judge CNN trained on samples only, real test accuracy": cell(
            cas.get("accuracy_on_real_test")
        ),
        "test −ELBO (nats/image)": cell(ev.get("test_nelbo_nats"), 1),
        "sampling temperature": cell((ev.get("conditions") or {}).get("temperature"), 1),
    }


def main() -> None:
    names = [n for n, s in GENERATIVE.items() if s.data == "fmnist"]
    names = [n for n in names if (METRICS / n / "eval.json").is_file()]
    table = {n: rows_of(n) for n in names}
    header = ["metric", *(f"`{n}`" for n in names)]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(names))
    for row in table[names[0]]:
        print("| " + " | ".join([row, *(table[n][row] for n in names)]) + " |")
    real = _load(METRICS / "cas" / "real.json")
    judge = _load(METRICS / "judge" / "train" / "metrics.json")
    if real:
        cas_real = cell(real["accuracy_on_real_test"])
        judged = cell(judge and judge["test"]["accuracy"])
        print(
            f"\nThe same CNN trained on the real training images (cas_real): {cas_real}. "
            f"The judge on the real test set: {judged}."
        )


if __name__ == "__main__":
    main()
