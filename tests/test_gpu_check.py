"""benchmarks/gpu_check.py --smoke: the GPU check script runs end to end on the CPU and writes
every figure it promises, so it cannot rot before a GPU runs it."""

import json
import math
import subprocess
import sys

from .conftest import REPO, run_env


def numbers(node):
    if isinstance(node, bool) or node is None or isinstance(node, str):
        return
    if isinstance(node, int | float):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from numbers(value)
    elif isinstance(node, list):
        for value in node:
            yield from numbers(value)


def test_smoke_run_writes_every_measurement_finite(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out-dir", str(out)],
        cwd=REPO,
        env=run_env(REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_embed.json",
        "gpu_stability.json",
        "gpu_train.json",
    ]
    reports = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    for report in reports.values():
        env = report["environment"]
        assert env["smoke"] is True and env["device_type"] == "cpu" and env["torch"]
        assert {"device", "cuda", "cudnn", "cpu_cores"} <= set(env)
        assert report["settings"]["smoke"] is True
        assert all(math.isfinite(x) for x in numbers(report["results"]))

    embed = reports["gpu_embed"]["results"]
    for encoder in ("clip-vit-b-32", "t5-small"):
        for precision in ("fp32", "bf16", "fp16"):
            row = embed[encoder][precision]
            assert row["captions_per_s"] > 0 and row["max_abs_diff_vs_fp32"] >= 0
        assert embed[encoder]["fp32"]["speedup_vs_fp32"] == 1.0

    train = reports["gpu_train"]["results"]
    assert train["loader_alone"]["pairs_per_s"] > 0
    rows = train["rows"]
    streamed = [r for r in rows if r["data"] == "streamed"]
    resident = [r for r in rows if r["data"] == "resident"]
    assert {(r["model"], r["batch_size"]) for r in streamed} == {
        (m, b) for m in ("coco_clip", "coco_t5") for b in (4, 8)
    }
    assert {(r["model"], r["batch_size"]) for r in resident} == {
        (m, b) for m in ("coco_clip", "coco_t5") for b in (4, 8, 16)
    }
    for row in rows:
        assert row["pairs_per_s"] > 0 and row["peak_memory_mb"] > 0
        assert row["train_over_loader"] > 0
    for row in streamed:  # on a CPU only the plain setting runs: its own baseline
        assert row["speedup_vs_plain"] == 1.0
    assert all(r["decoder"] == "pil" for r in resident)  # nvJPEG needs a GPU

    stable = reports["gpu_stability"]["results"]
    for model in ("coco_clip", "coco_t5"):
        assert stable[model]["all_finite"] is True and stable[model]["nonfinite_steps"] == 0
        assert stable[model]["steps"] == 6
