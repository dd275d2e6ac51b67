"""`t2i report`: self-contained HTML pages, opened in headless Chromium."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.charts import COLORS
from pipeline.report import PNG_SIGNATURE, write_report
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def images_loaded(page, profile) -> tuple[int, int]:
    """(images on the page, images that decoded) as the page's own load check reports."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (scripts/setup.sh installs Debian's chromium)")
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body[^>]*>", result.stdout).group(0)
    found = re.search(r'data-images="(\d+)" data-images-loaded="(\d+)"', body)
    assert found, body
    return int(found.group(1)), int(found.group(2))


def png(path, value):
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)
    return path


def committed_eval(model: str, **changes) -> dict:
    """The committed run's eval.json of ``model`` (a valid file of its schema), changed."""
    ev = json.loads((REPO / "metrics" / model / "eval.json").read_text())
    return ev | changes


def per_class(classes: dict, std: float = 0.0) -> dict:
    return {c: {"mean": v, "std": std} for c, v in classes.items()}


def test_report_images_load_in_headless_chromium_and_a_broken_one_is_caught(tmp_path):
    figures = {
        p.name: p.read_bytes() for p in (png(tmp_path / "a.png", 10), png(tmp_path / "b.png", 200))
    }
    write_report(tmp_path / "ok.html", "run", figures, {"m": {"x": 1.5}}, {"p": {"lr": 0.1}})
    assert images_loaded(tmp_path / "ok.html", tmp_path / "profile") == (2, 2)
    figures["b.png"] = PNG_SIGNATURE + b" not really"  # passes the signature, fails to decode
    write_report(tmp_path / "bad.html", "run", figures, {}, {})
    assert images_loaded(tmp_path / "bad.html", tmp_path / "profile") == (2, 1)


def test_t2i_report_gathers_the_runs_figures_metrics_and_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/fmnist_label").mkdir(parents=True)
    png(tmp_path / "reports/fmnist_label/fig.png", 99)
    (tmp_path / "metrics/fmnist_label/train").mkdir(parents=True)
    ev = committed_eval("fmnist_label", test_nelbo_nats=21.5)
    (tmp_path / "metrics/fmnist_label/eval.json").write_text(json.dumps(ev))
    live = {"step": 3, "train": {"loss": 1.25}}
    (tmp_path / "metrics/fmnist_label/train/metrics.json").write_text(json.dumps(live))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["report", "fmnist_label"])
    assert result.exit_code == 0, result.output
    report = tmp_path / "reports/fmnist_label/report.html"
    page = report.read_text()
    assert "<td>test_nelbo_nats</td><td class='num'>21.5</td>" in page
    assert "<td>train.loss</td><td class='num'>1.25</td>" in page  # train/metrics.json
    assert "<td>train.epochs</td><td class='num'>40</td>" in page  # its params entry
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert images_loaded(report, tmp_path / "profile") == (1, 1)
    result = CliRunner().invoke(app, ["report", "coco_t5"])
    assert result.exit_code == 1 and "run its stages first" in result.output
    result = CliRunner().invoke(app, ["report", "nothing"])
    assert result.exit_code == 1 and "unknown model 'nothing'" in result.output


def run_dir(tmp_path, eval_json: dict, model: str = "fmnist_label", epochs: int = 6, shift=0):
    """A run's committed outputs as `t2i report` reads them: one figure, dvclive's per-epoch
    TSVs (loss falling, KL rising), the train stage's last values and eval.json."""
    (tmp_path / "reports" / model).mkdir(parents=True, exist_ok=True)
    png(tmp_path / "reports" / model / "fig.png", 99)
    live = tmp_path / "metrics" / model / "train"
    for split, offset in (("train", shift), ("test", shift + 3.0)):
        (live / "plots/metrics" / split).mkdir(parents=True, exist_ok=True)
        for name, start, slope in (("loss", 280, -8), ("recon", 270, -9), ("kl", 10, 1)):
            rows = "".join(f"{e}\t{start + offset + slope * e + (e % 2)}\n" for e in range(epochs))
            (live / "plots/metrics" / split / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")
    last = {"train": {"loss": 240.0}, "test": {"loss": 250.0}, "step": epochs - 1}
    (live / "metrics.json").write_text(json.dumps(last))
    (tmp_path / "metrics" / model / "eval.json").write_text(json.dumps(eval_json))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")


def rendered(page, profile, tmp_path) -> tuple[dict, np.ndarray]:
    """The page's layout record (its load check) and a screenshot of the whole page, both at
    1200 px wide and one CSS pixel per screen pixel."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (scripts/setup.sh installs Debian's chromium)")
    flags = [
        *FLAGS,
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--window-size=1200,800", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    record = {k: html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', body)}
    shot = tmp_path / "shot.png"
    height = int(record["page-height"]) + 20
    subprocess.run(
        [
            CHROMIUM,
            *flags,
            f"--window-size=1200,{height}",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    return record, np.asarray(Image.open(shot).convert("RGB")).astype(int)


def ink(shot: np.ndarray, chart: dict, color: str) -> int:
    """Pixels of one series' colour inside a chart's data area (legend and labels lie outside)."""
    x, y, w, h = (round(chart[k]) for k in ("x", "y", "width", "height"))
    area = shot[y + 1 : y + h - 1, x + 1 : x + w - 1]
    rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(area - rgb).sum(axis=-1) < 60).sum())


PER_CLASS = {"Bag": 0.9, "Coat": 0.6, "Shirt": 0.3}
REAL = {"Bag": 0.97, "Coat": 0.85, "Shirt": 0.7}


def label_eval(overall: float) -> dict:
    """fmnist_label's committed eval.json with three classes: samples and real images."""
    samples = {"overall": {"mean": overall, "std": 0.0}, "per_class": per_class(PER_CLASS)}
    return committed_eval(
        "fmnist_label",
        judge_accuracy_on_samples=samples,
        judge_accuracy_on_real_test_per_class=REAL,
    )


def test_the_report_draws_training_curves_and_per_class_bars_visibly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir(tmp_path, label_eval(0.6))
    result = CliRunner().invoke(app, ["report", "fmnist_label"])
    assert result.exit_code == 0, result.output
    page = tmp_path / "reports/fmnist_label/report.html"
    assert "http://" not in page.read_text() and "https://" not in page.read_text()
    record, shot = rendered(page, tmp_path / "profile", tmp_path)
    charts = json.loads(record["charts"])
    curves, bars = charts[:3], charts[3]
    train, test = COLORS[0], COLORS[1]
    for chart in curves:  # loss, recon, kl: a train and a test line of 6 epochs each
        assert [(c[0], c[1]) for c in chart["curves"]] == [("train", 6), ("test", 6)]
        assert all(c[2] > 100 for c in chart["curves"]), chart  # laid out across the chart
        assert ink(shot, chart, train) > 50 and ink(shot, chart, test) > 50, chart
    assert bars["bars"] == 6  # 3 classes: the samples' bar beside the real images' bar
    assert ink(shot, bars, train) > 200 and ink(shot, bars, test) > 200
    assert len(charts) == 4


def test_report_all_compares_every_model_with_metrics_in_one_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir(tmp_path, label_eval(0.7778))
    spread = {"mean": 0.5733, "std": 0.0121}  # a metric measured over several sample seeds
    phrasings = {"overall": spread, "per_class": {"Bag": spread}}
    text = {f"judge_accuracy_{s}_phrasings": phrasings for s in ("heldout", "train", "val")}
    run_dir(tmp_path, committed_eval("fmnist_text", **text), model="fmnist_text", shift=20)
    result = CliRunner().invoke(app, ["report", "--all"])
    assert result.exit_code == 0, result.output
    index = tmp_path / "reports/index.html"
    page = index.read_text()
    header = re.search(r"<tr><th>metric</th>(.*?)</tr>", page).group(1)
    assert re.findall(r"href='([^']+)'>(\w+)<", header) == [
        ("fmnist_label/report.html", "fmnist_label"),
        ("fmnist_text/report.html", "fmnist_text"),
    ]
    assert (tmp_path / "reports/fmnist_text/report.html").is_file()
    assert "coco" not in header  # no metrics, no column
    assert "judge_accuracy_on_samples.overall</td><td class='num'>0.7778 ± 0</td><td></td>" in page
    assert "<td class='num'>0.5733 ± 0.012</td>" in page
    assert "http://" not in page and "https://" not in page
    record, shot = rendered(index, tmp_path / "profile", tmp_path)
    charts = json.loads(record["charts"])
    assert [c[0] for c in charts[0]["curves"]] == ["fmnist_label", "fmnist_text"]  # test loss
    assert ink(shot, charts[0], COLORS[0]) > 50 and ink(shot, charts[0], COLORS[1]) > 50
    assert charts[-1]["bars"] == 9  # the label model's 3 classes twice, Bag of 3 phrasings
    result = CliRunner().invoke(app, ["report", "fmnist_label", "--all"])
    assert result.exit_code == 1 and "give one MODEL, or --all" in result.output


def test_a_malformed_curve_file_is_one_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir(tmp_path, committed_eval("fmnist_label"))
    curve = tmp_path / "metrics/fmnist_label/train/plots/metrics/test/kl.tsv"
    curve.write_text("step\tkl\n0\tnot a number\n")
    result = CliRunner().invoke(app, ["report", "fmnist_label"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {curve.relative_to(tmp_path)}: not a dvclive TSV")
    assert not (tmp_path / "reports/fmnist_label/report.html").exists()
