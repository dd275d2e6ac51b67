"""`dvc repro` of the whole Fashion-MNIST path in a temp copy of the repo, with tiny params."""

import json
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pipeline.train import partial_live_dir

from .conftest import copy_repo, dvc, root_stages, run_env, set_param, stages_run, tiny_params

pytestmark = pytest.mark.e2e


def test_repro_runs_every_stage_then_nothing(finished_root_run):
    repo = finished_root_run.repo
    assert {
        "download_fmnist",
        "judge",
        "train@fmnist_label",
        "evaluate@fmnist_label",
        "embed@minilm-fmnist",
        "train_text@fmnist_text",
        "evaluate_text@fmnist_text",
    } <= root_stages(repo)
    assert stages_run(finished_root_run.output) == root_stages(repo)

    for name in ("fmnist_label", "fmnist_conv"):  # the paper's model and ours, one evaluator
        metrics = json.loads((repo / f"metrics/{name}/eval.json").read_text())
        for key in ("test_nelbo_nats", "test_iw_nll_nats"):
            assert metrics[key] > 0
        assert metrics["test_iw_nll_nats"] <= metrics["test_nelbo_nats"] + 1.0
        nelbo = metrics["test_recon_nats"] + metrics["test_kl_nats"]
        assert metrics["test_nelbo_nats"] == pytest.approx(nelbo, rel=1e-6)
        accuracy = metrics["judge_accuracy_on_samples"]
        assert set(accuracy["per_class"]) == set(metrics["judge_accuracy_on_real_test_per_class"])
        assert_shares_of_equal_classes(accuracy, scored=3 * 10 * 20)  # seeds x classes x 20
        frechet, floor = metrics["frechet_judge_features"], metrics["frechet_real_vs_real"]
        assert 0 < floor["mean"] < frechet["mean"] and frechet["std"] > 0  # 3 sample sets
        conditions = metrics["conditions"]
        assert (conditions["test_images"], conditions["sample_seeds"]) == (500, 3)
        assert conditions["temperature"] == 1.0
    for name in ("fmnist_text", "fmnist_text_prior"):
        metrics = json.loads((repo / f"metrics/{name}/eval.json").read_text())
        for split in ("train", "val", "heldout"):
            assert_shares_of_equal_classes(metrics[f"judge_accuracy_{split}_phrasings"])
            assert metrics[f"frechet_judge_features_{split}_phrasings"]["mean"] > 0
    # CAS: the judge's CNN trained on each model's samples only, and on real images.
    cas = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics/cas").glob("*.json")}
    assert set(cas) == {"real", "fmnist_label", "fmnist_conv", "fmnist_text", "fmnist_text_prior"}
    for name, result in cas.items():
        # scored on the 10,000 real test images, 1,000 a class: the mean of the 10 classes'
        accuracy, per_class = result["accuracy_on_real_test"], result["per_class"]
        assert len(per_class) == 10, name
        assert accuracy == pytest.approx(sum(per_class.values()) / 10, abs=1e-6), name
        assert accuracy * 10_000 == pytest.approx(round(accuracy * 10_000), abs=1e-3), name
    assert cas["real"]["accuracy_on_real_test"] > 0.5  # 2,048 real images, one epoch
    assert cas["fmnist_label"]["conditions"]["training_images"] == 10 * 100
    for figure in ("fig4_reconstructions", "fig5_generated", "fig5_all_classes"):
        assert Image.open(repo / f"reports/fmnist_label/{figure}.png").width > 100
    judge = json.loads((repo / "metrics/judge/train/metrics.json").read_text())
    # The stage's own gate is the small setting's floor (the tiny judge reads about 0.71).
    assert judge["test"]["accuracy"] >= tiny_params()["judge"]["min_accuracy"] == 0.6
    assert len(load_file(repo / "models/fmnist_label/model.safetensors")) == 10
    plots = dvc(repo, "plots", "show", "--json")
    assert "CVAE loss per image (fmnist_label)" in plots and "fig5_generated.png" in plots

    assert stages_run(dvc(repo, "repro")) == set()


def assert_shares_of_equal_classes(accuracy: dict, scored: int | None = None) -> None:
    """Judge accuracy of samples drawn equally for each of the 10 classes: the overall share
    is the mean of the classes' shares; with ``scored`` samples in all (over the seeds), the
    mean is a whole count of hits over that number."""
    per_class = [value["mean"] for value in accuracy["per_class"].values()]
    assert len(per_class) == 10
    assert accuracy["overall"]["mean"] == pytest.approx(sum(per_class) / 10, abs=1e-6)
    if scored is not None:
        hits = accuracy["overall"]["mean"] * scored
        assert hits == pytest.approx(round(hits), abs=1e-3)


def test_a_param_change_reruns_only_the_stages_it_touches(finished_root_run, tmp_path):
    repo = copy_repo(finished_root_run.repo, tmp_path)
    assert stages_run(dvc(repo, "repro")) == set()  # the copy is as finished as the original

    set_param(repo, "models.fmnist_label.train", "epochs", 3)
    assert stages_run(dvc(repo, "repro")) == {  # the model, and all that reads it
        "train@fmnist_label",
        "evaluate@fmnist_label",
        "cas@fmnist_label",
    }
    curve = (repo / "metrics/fmnist_label/train/plots/metrics/train/loss.tsv").read_text()
    assert len(curve.strip().splitlines()) == 1 + 3  # header + 3 epochs, 2 of them resumed
    diff = dvc(repo, "metrics", "diff", "HEAD", "--json")
    assert "metrics/fmnist_label/eval.json" in diff


def test_killed_training_rerun_ends_with_the_same_weights(finished_root_run, tmp_path):
    repo_copy = copy_repo(finished_root_run.repo, tmp_path)  # the data downloaded
    shutil.rmtree(repo_copy / "models/fmnist_label/state")  # the kill waits for a new state
    set_param(repo_copy, "models.fmnist_label.train", "epochs", 3)
    set_param(repo_copy, "models.fmnist_label.train", "train_limit", 12000)
    cmd = ["t2i", "train", "fmnist_label"]
    state = repo_copy / "models/fmnist_label/state/train_state.safetensors"

    proc = subprocess.Popen(cmd, cwd=repo_copy, env=run_env(repo_copy), stderr=subprocess.DEVNULL)
    while not state.exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    # the finished run's summary was cleared at the start and the killed run published none:
    # its curves stay in the partial folder, which the rerun replaces
    live = repo_copy / "metrics/fmnist_label/train"
    assert not (live / "metrics.json").exists()
    assert (partial_live_dir(live) / "metrics.json").is_file()
    subprocess.run(cmd, cwd=repo_copy, env=run_env(repo_copy), check=True, capture_output=True)
    resumed = load_file(repo_copy / "models/fmnist_label/model.safetensors")
    summary = json.loads((live / "metrics.json").read_text())  # published with the model
    assert summary["step"] == 2 and not partial_live_dir(live).exists()  # epochs 1-3

    state.unlink()
    subprocess.run(cmd, cwd=repo_copy, env=run_env(repo_copy), check=True, capture_output=True)
    uninterrupted = load_file(repo_copy / "models/fmnist_label/model.safetensors")
    assert all((resumed[k] == uninterrupted[k]).all() for k in uninterrupted)


def test_the_largest_learning_rate_stops_with_one_line_and_saves_nothing(repo_copy):
    """models.fmnist_label.train.lr: 1.0 (the most the params allow) used to save NaN weights as a
    success; the guard skips the non-finite steps, then stops the stage at the end of the
    epoch, whose share of skipped steps is above max_nonfinite_share, with one line, and DVC
    records nothing."""
    set_param(repo_copy, "models.fmnist_label.train", "lr", 1.0)
    run = subprocess.run(
        ["dvc", "repro", "train@fmnist_label"],
        cwd=repo_copy,
        env=run_env(repo_copy),
        capture_output=True,
        text=True,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    errors = [line for line in output.splitlines() if line.startswith("error: train fmnist_label")]
    assert len(errors) == 1, output
    assert re.fullmatch(
        r"error: train fmnist_label: stopped after epoch 1: (\d+) of its 16 steps were not "
        r"finite and skipped \(max_nonfinite_share 0\.5\); no model written, the resume state "
        r"of the last finished epoch is kept\. Check that the inputs are finite, lower the "
        r"learning rate or raise warmup_steps\.",
        errors[0],
    ), errors[0]
    assert int(re.search(r"(\d+) of its 16", errors[0])[1]) > 8  # more than half skipped
    assert "step skipped" in output and "Traceback" not in output
    assert not (repo_copy / "models/fmnist_label/model.safetensors").exists()
    assert not (repo_copy / "models/fmnist_label/state/train_state.safetensors").exists()
    live = repo_copy / "metrics/fmnist_label/train"  # no curves of a model that does not exist
    assert not (live / "metrics.json").exists() and not partial_live_dir(live).exists()
    assert "train@fmnist_label" not in (repo_copy / "dvc.lock").read_text()


def test_changing_how_the_condition_is_built_trains_afresh(finished_root_run, tmp_path):
    """A finished run, then the stage builds its one-hot condition differently: DVC reruns the
    stage, and training starts from scratch instead of "resuming" at its last epoch."""
    repo_copy = copy_repo(finished_root_run.repo, tmp_path)
    assert (repo_copy / "models/fmnist_label/state/train_state.safetensors").is_file()
    weights = repo_copy / "models/fmnist_label/model.safetensors"
    before = load_file(weights)
    stage = repo_copy / "stages/train.py"
    code = stage.read_text()
    assert code.count("F.one_hot(y, 10)") == 1
    stage.write_text(code.replace("F.one_hot(y, 10)", "F.one_hot((y + 1) % 10, 10)"))
    assert stages_run(dvc(repo_copy, "repro", "train@fmnist_label")) == {"train@fmnist_label"}
    rerun = load_file(weights)

    (repo_copy / "models/fmnist_label/state/train_state.safetensors").unlink()
    subprocess.run(
        ["t2i", "train", "fmnist_label"],
        cwd=repo_copy,
        env=run_env(repo_copy),
        check=True,
        capture_output=True,
    )
    scratch = load_file(weights)
    assert any(not torch.equal(before[k], rerun[k]) for k in before)  # it trained again...
    assert all(torch.equal(rerun[k], scratch[k]) for k in scratch)  # ...from scratch
