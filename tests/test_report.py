"""`t2i report`: one self-contained HTML page, opened in headless Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report import write_report

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
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                             page.resolve().as_uri()], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    body = re.search(r"<body[^>]*>", result.stdout).group(0)
    found = re.search(r'data-images="(\d+)" data-images-loaded="(\d+)"', body)
    assert found, body
    return int(found.group(1)), int(found.group(2))


def png(path, value):
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)
    return path


def test_report_images_load_in_headless_chromium_and_a_broken_one_is_caught(tmp_path):
    figures = [png(tmp_path / "a.png", 10), png(tmp_path / "b.png", 200)]
    write_report(tmp_path / "ok.html", "run", figures, {"m": {"x": 1.5}}, {"p": {"lr": 0.1}})
    assert images_loaded(tmp_path / "ok.html", tmp_path / "profile") == (2, 2)
    (tmp_path / "b.png").write_bytes(b"\x89PNG not really")
    write_report(tmp_path / "bad.html", "run", figures, {}, {})
    assert images_loaded(tmp_path / "bad.html", tmp_path / "profile") == (2, 1)


def test_t2i_report_gathers_the_runs_figures_metrics_and_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/fmnist_label").mkdir(parents=True)
    png(tmp_path / "reports/fmnist_label/fig.png", 99)
    (tmp_path / "metrics/fmnist_label/train").mkdir(parents=True)
    (tmp_path / "metrics/fmnist_label/eval.json").write_text(json.dumps({"psnr": {"db": 21.5}}))
    (tmp_path / "metrics/fmnist_label/train/metrics.json").write_text(json.dumps({"step": 3}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({}))
    result = CliRunner().invoke(app, ["report", "fmnist_label"])
    assert result.exit_code == 0, result.output
    report = tmp_path / "reports/fmnist_label/report.html"
    page = report.read_text()
    assert "psnr.db" in page and "21.5" in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert images_loaded(report, tmp_path / "profile") == (1, 1)
    result = CliRunner().invoke(app, ["report", "coco_t5"])
    assert result.exit_code == 1 and "run its stages first" in result.output
    result = CliRunner().invoke(app, ["report", "nothing"])
    assert result.exit_code == 1 and "unknown model 'nothing'" in result.output
