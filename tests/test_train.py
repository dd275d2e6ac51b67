"""The shared training loop: determinism, exact resume, and the resume guard."""

import csv
import hashlib
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline.checkpoint import load_model, load_state, save_model, tensors_sha256
from pipeline.config import FitSpec, parse_params
from pipeline.data.batches import InMemoryBatches
from pipeline.errors import PipelineError
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import (
    FitData,
    NonFiniteTraining,
    fit,
    inputs_digest,
    partial_live_dir,
    publish_live,
    run_fingerprint,
)

from .conftest import REPO, fit_run, fit_spec, run_env

SAVED = {"data": "fmnist", "image_shape": [1, 28, 28], "conditioning": "label", "cond_null_p": 0.0}


def saved_meta(name="m", class_key="cvae_mlp", **fields) -> dict:
    """What a training stage records beside the weights (pipeline/checkpoint.py SavedMeta)."""
    return {"name": name, "class": class_key, **SAVED, **fields}


def toy_data(n=96):
    """Each class is a fixed binary pattern, so a CVAE can learn it from few images."""
    g = torch.Generator().manual_seed(123)
    templates = (torch.rand(10, 784, generator=g) > 0.5).float()
    labels = torch.randint(0, 10, (n,), generator=g)
    x, c = templates[labels], F.one_hot(labels, 10).float()
    return InMemoryBatches(x, c, batch_size=32), InMemoryBatches(x[:32], c[:32], batch_size=32)


def train_toy(tmp, epochs, lr=1e-3, name="run"):
    generator = make_deterministic(7, torch.device("cpu"))
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    history = fit(
        model,
        FitData(*toy_data()),
        fit_spec(epochs=epochs, batch_size=32, lr=lr),
        fit_run(
            generator=generator,
            state_path=tmp / name / "state.safetensors",
            live_dir=tmp / name / "live",
            fingerprint=run_fingerprint(model, {"lr": lr}),
        ),
    )
    publish_live(tmp / name / "live")  # as a stage does, once the model is saved
    return model, history


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_seed_gives_identical_weights(tmp_path):
    a, history_a = train_toy(tmp_path, 2, name="a")
    b, history_b = train_toy(tmp_path, 2, name="b")
    assert_same(weights(a), weights(b))
    assert history_a == history_b


def test_resumed_run_ends_at_the_weights_of_an_uninterrupted_run(tmp_path):
    full, full_history = train_toy(tmp_path, 4, name="full")
    train_toy(tmp_path, 2, name="resumed")  # "interrupted" after epoch 2
    resumed, resumed_history = train_toy(tmp_path, 4, name="resumed")
    assert_same(weights(full), weights(resumed))
    assert resumed_history == full_history
    with open(tmp_path / "resumed" / "live" / "plots" / "metrics" / "train" / "loss.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]  # curves are whole after a resume


def test_state_of_other_params_is_not_resumed(tmp_path):
    train_toy(tmp_path, 3, lr=1e-3, name="x")
    _, history = train_toy(tmp_path, 2, lr=5e-3, name="x")
    fresh, fresh_history = train_toy(tmp_path, 2, lr=5e-3, name="fresh")
    assert history == fresh_history


def test_training_overfits_a_few_images(tmp_path):
    _, history = train_toy(tmp_path, 30, lr=1e-2)
    assert history[-1]["train/loss"] < history[0]["train/loss"] / 5
    assert set(history[0]) == {
        f"{s}/{t}" for s in ("train", "test") for t in ("loss", "recon", "kl")
    } | {"train/nonfinite_steps"}


def test_saved_model_loads_back_identically(tmp_path):
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    save_model(tmp_path / "m", model, saved_meta(labels=["a"]))
    loaded, config = load_model(tmp_path / "m")
    assert config["latent_dim"] == 4 and config["labels"] == ["a"]
    assert config["class"] == "cvae_mlp" and config["conditioning"] == "label"
    assert_same(weights(model), weights(loaded))
    assert not (tmp_path / "m" / "model.safetensors").read_bytes().startswith(b"\x80")  # no pickle


def test_auto_device_is_cpu_without_cuda_and_an_explicit_cuda_is_refused():
    code = (
        "from pipeline.errors import PipelineError\n"
        "from pipeline.runtime import resolve_device\n"
        "print(resolve_device('auto'))\n"
        "try:\n    resolve_device('cuda')\nexcept PipelineError as exc:\n    print(exc)\n"
    )
    env = {**run_env(REPO), "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "cpu",
        "device: 'cuda' requested but CUDA is unavailable; use auto or cpu",
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_device_is_cuda_when_a_gpu_is_present():
    assert resolve_device("auto").type == "cuda"


def test_nonfinite_batches_are_skipped_counted_and_never_reach_the_weights(tmp_path):
    train, test = toy_data()
    x, c = train.tensors
    x = x.clone()
    x[5, 100] = float("nan")  # one broken image: exactly one batch of each epoch is non-finite
    generator = make_deterministic(7, torch.device("cpu"))
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    history = fit(
        model,
        FitData(InMemoryBatches(x, c, batch_size=32), test),
        fit_spec(epochs=3, batch_size=32, lr=1e-2, max_nonfinite_steps=2),
        fit_run(
            "toy",
            generator=generator,
            state_path=tmp_path / "s" / "state.safetensors",
            live_dir=tmp_path / "live",
            fingerprint="f",
        ),
    )
    publish_live(tmp_path / "live")
    assert [row["train/nonfinite_steps"] for row in history] == [1.0, 1.0, 1.0]
    assert all(math.isfinite(v) for row in history for v in row.values())
    assert history[-1]["train/loss"] < history[0]["train/loss"]  # the other steps trained
    assert all(bool(v.isfinite().all()) for v in model.state_dict().values())
    with open(tmp_path / "live" / "plots" / "metrics" / "train" / "nonfinite_steps.tsv") as f:
        assert [float(r["nonfinite_steps"]) for r in csv.DictReader(f, delimiter="\t")] == [1] * 3


def test_the_guard_stops_the_run_and_keeps_the_last_good_resume_state(tmp_path):
    state = tmp_path / "state" / "state.safetensors"
    train, test = toy_data()
    spec = fit_spec(epochs=2, batch_size=32, lr=1e-3, max_nonfinite_steps=2)

    def run():
        return fit_run(
            "toy",
            generator=make_deterministic(7, torch.device("cpu")),
            state_path=state,
            live_dir=tmp_path / "live",
            fingerprint="f",
        )

    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    fit(model, FitData(train, test), spec, run())
    good = state.read_bytes()
    x, c = train.tensors
    broken = InMemoryBatches(torch.full_like(x, float("nan")), c, batch_size=32)
    with pytest.raises(NonFiniteTraining) as raised:
        fit(
            CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
            FitData(broken, test),
            spec.model_copy(update={"epochs": 3}),
            run(),
        )
    message = str(raised.value)
    assert message.startswith("train toy: stopped at epoch 3, step 2: loss, recon")
    assert "(loss term) not finite in 2 consecutive steps" in message
    assert state.read_bytes() == good  # nothing saved after the failure
    _, meta = load_state(state)
    assert meta["epoch"] == 2  # and a rerun on good data resumes from it
    resumed = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    history = fit(resumed, FitData(train, test), spec.model_copy(update={"epochs": 3}), run())
    assert len(history) == 3 and history[:2] == meta["history"]


def test_warmup_ramps_the_learning_rate_linearly_over_optimizer_steps(tmp_path):
    state = tmp_path / "state.safetensors"
    train, test = toy_data()  # 96 images, batch 32: 3 steps an epoch
    for epochs, expected in ((1, 3 / 5), (2, 1.0)):
        fit(
            CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
            FitData(train, test),
            fit_spec(epochs=epochs, batch_size=32, lr=1e-2, warmup_steps=5),
            fit_run(
                generator=make_deterministic(7, torch.device("cpu")),
                state_path=state,
                live_dir=tmp_path / "live",
                fingerprint="f",
            ),
        )
        _, meta = load_state(state)
        assert meta["steps"] == 3 * epochs
        assert meta["param_groups"][0]["lr"] == pytest.approx(1e-2 * expected)


def test_nan_weights_are_never_saved(tmp_path):
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(PipelineError, match="weight fc1.weight holds non-finite values"):
        save_model(tmp_path / "m", model, saved_meta())
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_a_skipped_step_leaves_batchnorm_statistics_untouched(tmp_path):
    """A non-finite batch is skipped before the optimizer, but its forward pass has already
    moved BatchNorm's running statistics: the guard restores them."""
    from pipeline.models.judge import JudgeCNN

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
    x[:] = float("nan")  # every batch is broken
    model = JudgeCNN.of(num_classes=10, feature_dim=128)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteTraining):
        fit(
            model,
            FitData(InMemoryBatches(x, y, batch_size=32), InMemoryBatches(x, y, batch_size=32)),
            fit_spec(epochs=1, batch_size=32, lr=1e-3, max_nonfinite_steps=2),
            fit_run(
                "judge",
                generator=make_deterministic(0, torch.device("cpu")),
                state_path=tmp_path / "state.safetensors",
                live_dir=tmp_path / "live",
                fingerprint="f",
            ),
        )
    assert_same(before, model.state_dict())  # weights and running statistics


def test_inputs_digest_follows_every_byte_and_name_of_files_and_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data/sub").mkdir(parents=True)
    Path("data/sub/a.bin").write_bytes(b"abc")
    Path("code.py").write_text("x = 1\n")
    inputs = [Path("data"), Path("code.py")]
    first = inputs_digest(inputs)
    assert inputs_digest(inputs) == first
    Path("data/sub/a.bin").write_bytes(b"abd")
    assert inputs_digest(inputs) != first
    Path("data/sub/a.bin").write_bytes(b"abc")
    Path("data/sub/a.bin").rename("data/sub/b.bin")
    assert inputs_digest(inputs) != first
    Path("data/sub/b.bin").rename("data/sub/a.bin")
    assert inputs_digest(inputs) == first


def fit_kept(tmp_path, epochs, lr, keep, data=None, share=0.5):
    """Train the toy CVAE with kept epochs in tmp_path/epochs and publish its curves, as a
    stage does once the model is saved; (model, history)."""
    generator = make_deterministic(7, torch.device("cpu"))  # before the weights are drawn
    model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    spec = fit_spec(
        epochs=epochs, batch_size=32, lr=lr, max_nonfinite_share=share, keep_epochs=list(keep)
    )
    run = fit_run(
        "toy",
        generator=generator,
        state_path=tmp_path / "state.safetensors",
        live_dir=tmp_path / "live",
        fingerprint=run_fingerprint(model, {"lr": lr}),
        keep_dir=tmp_path / "epochs",
    )
    history = fit(model, FitData(*(data or toy_data())), spec, run)
    publish_live(tmp_path / "live")
    return model, history


def kept_files(tmp_path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((tmp_path / "epochs").iterdir())}


def test_keep_dir_holds_exactly_the_kept_epochs_with_their_sha256(tmp_path):
    fit_kept(tmp_path, 2, 1e-3, (1, 2))
    first = kept_files(tmp_path)
    manifest = json.loads(first.pop("kept.json"))
    assert manifest == {n: hashlib.sha256(b).hexdigest() for n, b in first.items()}
    assert list(manifest) == ["epoch-0001.safetensors", "epoch-0002.safetensors"]
    _, meta = load_state(tmp_path / "state.safetensors")
    assert meta["kept"] == {
        "1": manifest["epoch-0001.safetensors"],
        "2": manifest["epoch-0002.safetensors"],
    }

    _, history = fit_kept(tmp_path, 3, 1e-3, (1, 2, 3))  # resumed: 1 and 2 stay as they were
    files = kept_files(tmp_path)
    assert len(history) == 3 and [files[n] for n in first] == list(first.values())
    assert sorted(json.loads(files["kept.json"])) == [*first, "epoch-0003.safetensors"]

    fit_kept(tmp_path, 3, 1e-3, (3,))  # dropped epochs go, nothing retrained
    assert sorted(kept_files(tmp_path)) == ["epoch-0003.safetensors", "kept.json"]

    # An epoch already trained but not kept: the run starts afresh and writes it again.
    fit_kept(tmp_path, 3, 1e-3, (2, 3))
    files = kept_files(tmp_path)
    assert sorted(files) == ["epoch-0002.safetensors", "epoch-0003.safetensors", "kept.json"]
    assert files["epoch-0002.safetensors"] == first["epoch-0002.safetensors"]  # bit-identical

    fit_kept(tmp_path, 2, 5e-3, (2,))  # other params: a fresh start
    assert sorted(kept_files(tmp_path)) == ["epoch-0002.safetensors", "kept.json"]
    fit_kept(tmp_path, 1, 5e-3, ())  # fewer epochs than the state: afresh, nothing kept
    assert kept_files(tmp_path) == {"kept.json": b"{}\n"}


def overwrite_one_tensor(path: Path, value: float = 0.5) -> None:
    """Still a readable safetensors file (metadata kept), with one tensor changed."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name] = tensors[name].clone().fill_(value)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("damage", ["overwrite", "delete"])
def test_a_changed_or_missing_kept_epoch_is_rebuilt_never_resumed(tmp_path, damage, caplog):
    _, history = fit_kept(tmp_path, 2, 1e-3, (1, 2))
    good = kept_files(tmp_path)
    epoch1 = tmp_path / "epochs" / "epoch-0001.safetensors"
    overwrite_one_tensor(epoch1) if damage == "overwrite" else epoch1.unlink()
    with caplog.at_level(logging.WARNING, logger="pipeline.train"):
        _, again = fit_kept(tmp_path, 2, 1e-3, (1, 2))
    assert f"{epoch1}: " in caplog.text and "training afresh" in caplog.text
    assert kept_files(tmp_path) == good  # rebuilt bit for bit, not the damaged file
    assert again == history


def test_keep_epochs_beyond_the_run_is_one_line(tmp_path):
    with pytest.raises(PipelineError) as raised:
        fit_kept(tmp_path, 2, 1e-3, (2, 5))
    assert str(raised.value) == (
        "train toy: keep_epochs [5] outside 1..epochs (2); name only epochs the run trains"
    )


@pytest.mark.parametrize("damage", ["tensor", "nan"])
def test_a_damaged_resume_state_is_refused_with_how_to_start_afresh(tmp_path, damage):
    fit_kept(tmp_path, 1, 1e-3, ())
    state = tmp_path / "state.safetensors"
    if damage == "tensor":  # one tensor overwritten: the recorded sha256 no longer matches
        overwrite_one_tensor(state)
        expected = "its tensors fail their recorded sha256 (changed after training wrote them)"
    else:  # NaN written with a matching sha256: still refused
        with safe_open(str(state), framework="pt") as handle:
            meta = json.loads(handle.metadata()["meta"])
        tensors = load_file(str(state))
        tensors["model.fc1.weight"][0, 0] = float("nan")
        meta["sha256"] = tensors_sha256(tensors)
        save_file(tensors, str(state), metadata={"meta": json.dumps(meta)})
        expected = "model.fc1.weight holds non-finite values"
    damaged, metrics = state.read_bytes(), (tmp_path / "live" / "metrics.json").read_bytes()
    with pytest.raises(PipelineError) as raised:
        fit_kept(tmp_path, 2, 1e-3, ())
    assert str(raised.value) == (
        f"{state}: {expected}; delete it to train afresh (rm {state}), then rerun the stage"
    )
    assert state.read_bytes() == damaged  # and the metrics of the last good run unchanged:
    assert (tmp_path / "live" / "metrics.json").read_bytes() == metrics
    state.unlink()  # as the message says: then it trains afresh
    _, history = fit_kept(tmp_path, 2, 1e-3, ())
    assert len(history) == 2


def test_an_epoch_that_skips_too_many_steps_stops_the_run_and_leaves_no_metric(tmp_path):
    """One broken image of 96 (one batch of three) with max_nonfinite_share 0.25, never
    max_nonfinite_steps (20) in a row: the share stops it; so does an epoch where every step
    is skipped, at the default share (issue 21, case 3)."""
    train, test = toy_data()
    x, c = train.tensors
    for broken, share, skipped in ((slice(5, 6), 0.25, 1), (slice(None), 0.5, 3)):
        x2 = x.clone()
        x2[broken] = float("nan")
        data = (InMemoryBatches(x2, c, batch_size=32), test)
        with pytest.raises(NonFiniteTraining) as raised:
            fit_kept(tmp_path / str(skipped), 2, 1e-3, (), data=data, share=share)
        assert str(raised.value).startswith(
            f"train toy: stopped after epoch 1: {skipped} of its 3 steps were not finite and "
            f"skipped (max_nonfinite_share {share}); no model written"
        )
        assert not (tmp_path / str(skipped) / "live" / "metrics.json").exists()
        assert not partial_live_dir(tmp_path / str(skipped) / "live").exists()  # nor curves
        assert not (tmp_path / str(skipped) / "state.safetensors").exists()


def test_every_training_section_is_a_fit_spec_with_its_own_schedule():
    """FitSpec is a typed part of each section that trains: fit() reads the section itself,
    so a renamed key is a validation error, never a silent default."""
    params = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    sections = [params.model(name).train for name in params.models]
    sections += [params.judge, params.cas]
    assert all(isinstance(s, FitSpec) for s in sections)
    assert [s.epochs for s in sections] == [40, 40, 8, 40, 200, 100, 7, 6]
    coco_clip = params.model("coco_clip").train
    assert coco_clip.weight_decay == 1e-5 and coco_clip.grad_clip == 1.0
    assert params.judge.weight_decay == 0.0 and params.judge.grad_clip is None
    with pytest.raises(ValidationError, match="epochs"):
        FitSpec(batch_size=32, lr=1e-3)  # no schedule without its epochs


def test_one_cycle_spans_exactly_the_steps_of_the_run():
    from pipeline.train import one_cycle_lr, steps_per_epoch

    data = InMemoryBatches(torch.zeros(1000, 3), torch.zeros(1000), batch_size=128)
    per_epoch = steps_per_epoch(data)
    assert per_epoch == len(list(data.batches())) == 8
    total, peak = 3 * per_epoch, 3e-3
    lrs = [one_cycle_lr(peak, step, total) for step in range(1, total + 1)]
    assert lrs[0] == pytest.approx(peak + (peak / 25 - peak) * (1 + math.cos(math.pi / 6)) / 2)
    assert max(lrs) == pytest.approx(peak) and lrs.index(max(lrs)) == total // 4 - 1
    assert lrs[-1] == pytest.approx(peak / 25e4)
    up, down = lrs[: total // 4], lrs[total // 4 - 1 :]
    assert up == sorted(up) and down == sorted(down, reverse=True)  # up, then down
