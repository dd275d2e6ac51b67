"""Hostile input, round 3: `generate -n` bounded and batched; non-UTF-8 bytes and unknown
labels on the command line and in captions/fmnist.json are one line naming where."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.checkpoint import save_model
from pipeline.data.fmnist import LABELS
from pipeline.evaluate import sample_images
from pipeline.figures import image_grid
from pipeline.models.cvae_mlp import CVAEMLP
from pipeline.models.registry import FMNIST_SHAPE
from stages.cli import app

from .conftest import REPO, one_error_line, run_env, set_param, tiny_prior
from .encoder_fixtures import trained_on


def meta(name: str, class_key: str, conditioning: str = "label", **more) -> dict:
    """config.json's description of a Fashion-MNIST model as its train stage saves it."""
    saved = {"name": name, "class": class_key, "data": "fmnist", "image_shape": FMNIST_SHAPE}
    saved |= {"conditioning": conditioning, "cond_null_p": 0.0, "labels": LABELS}
    return saved | more


def write_params(tmp_path, **generate) -> str:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["generate"].update(generate)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.fixture
def label_model(tmp_path):
    torch.manual_seed(0)
    save_model(
        tmp_path / "m",
        CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat"),
        meta("fmnist_label", "cvae_mlp"),
    )
    return tmp_path / "m"


def generate(model, output, *args):
    argv = ["generate", "--model", str(model), "-o", str(output), *args]
    return CliRunner().invoke(app, argv)


def test_the_repository_bounds_n(tmp_path, label_model):
    """The default params.yaml: -n 10000000 is refused before any model is read."""
    result = generate(label_model, tmp_path / "g.png", "--label", "bag", "-n", "10000000")
    assert one_error_line(result) == (
        "error: -n 10000000: more than generate.max_samples = 4096 images in one grid "
        "(params.yaml); ask for fewer, or raise generate.max_samples"
    )
    assert not (tmp_path / "g.png").exists()


def test_n_over_the_param_is_one_line_and_at_the_param_it_draws(tmp_path, label_model):
    params = write_params(tmp_path, max_samples=20, batch_size=8)
    out = tmp_path / "g.png"
    result = generate(label_model, out, "--label", "bag", "-n", "21", "--params", params)
    assert one_error_line(result) == (
        f"error: -n 21: more than generate.max_samples = 20 images in one grid ({params}); "
        "ask for fewer, or raise generate.max_samples"
    )
    assert not out.exists()
    result = generate(label_model, out, "--label", "bag", "-n", "20", "--params", params)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (8 * 58 + 2, 3 * 58 + 2)  # 20 tiles: rows of 8, 8, 4


@pytest.mark.parametrize("kind", ["mlp", "prior"])
def test_batched_sampling_draws_the_images_one_batch_of_n_draws(tmp_path, kind):
    """n = 45 decoded 8 at a time (6 batches, the last of 5) gives exactly the grid that
    decoding all 45 at once gives, and that sample_images (evaluate's path: one batch of
    n, z drawn from the seed's generator) gives. Also for a model with a learned prior."""
    torch.manual_seed(0)
    if kind == "mlp":
        model = CVAEMLP.of(input_dim=784, cond_dim=10, hidden_dim=16, latent_dim=4, fusion="concat")
    else:
        model = tiny_prior(latent_dim=4, arch="conv")
    entry = ("fmnist_label", "cvae_mlp") if kind == "mlp" else ("fmnist_conv", "cvae_prior")
    save_model(tmp_path / "m", model, meta(*entry))
    grids = {}
    for batch in (8, 256):
        out = tmp_path / f"b{batch}.png"
        params = write_params(tmp_path, batch_size=batch)
        args = ["--label", "7", "-n", "45", "--columns", "10", "--seed", "3", "--params", params]
        result = generate(tmp_path / "m", out, *args)
        assert result.exit_code == 0, result.output
        grids[batch] = np.asarray(Image.open(out))
    condition = F.one_hot(torch.full((45,), 7), 10).float()
    images = sample_images(model.eval(), condition, torch.Generator().manual_seed(3))
    tiles = images.reshape(45, 28, 28).numpy()
    expected = np.asarray(image_grid([tiles[i : i + 10] for i in range(0, 45, 10)], scale=2))
    assert grids[8].shape == (5 * 58 + 2, 10 * 58 + 2, 3)
    np.testing.assert_array_equal(grids[8], expected)
    np.testing.assert_array_equal(grids[256], expected)
    assert len(np.unique(grids[8])) > 2  # a drawn grid, not a blank canvas


def run_t2i(args: list, cwd) -> subprocess.CompletedProcess:
    """The real `t2i` command, argv as bytes (a shell passes a Latin-1 byte as is)."""
    return subprocess.run(["t2i", *args], cwd=cwd, env=run_env(), capture_output=True)


def one_stderr_line(result: subprocess.CompletedProcess) -> str:
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_latin1_byte_in_a_caption_is_one_line(tmp_path):
    model = CVAEMLP.of(input_dim=784, cond_dim=384, hidden_dim=16, latent_dim=4, fusion="concat")
    # trained on the MiniLM that params.yaml names: it loads, and the caption is refused
    identity = trained_on("minilm", REPO / "params.yaml")
    encoder = {key: identity[key] for key in ("encoder_weights", "encoder_sha256")}
    save_model(tmp_path / "m", model, meta("fmnist_text", "cvae_mlp", "minilm", **encoder))
    args = [b"generate", b"--model", b"m", b"-o", b"x.png", b"--params", str(REPO / "params.yaml")]
    result = run_t2i([*args, b"--caption", b"caf\xe9 shoes"], tmp_path)
    assert one_stderr_line(result) == (
        "error: --caption: byte 0xe9 at character 4 is not UTF-8 text; give it in UTF-8"
    )
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (b"\xb2", "--label: byte 0xb2 at character 1 is not UTF-8 text; give it in UTF-8"),
        ("²".encode(), "unknown Fashion-MNIST label '²'; expected 0-9 or one of: "),
        (b"-1", "unknown Fashion-MNIST label '-1'; expected 0-9 or one of: "),
        (b"10", "unknown Fashion-MNIST label '10'; expected 0-9 or one of: "),
    ],
)
def test_a_label_outside_the_classes_is_one_line(tmp_path, label_model, label, expected):
    """'²' is a digit to str.isdigit() but no class; a Latin-1 '²' is not even UTF-8."""
    args = [b"generate", b"--model", bytes(label_model), b"-o", b"x.png", b"--label", label]
    line = one_stderr_line(run_t2i([*args, b"--params", str(REPO / "params.yaml")], tmp_path))
    assert line.startswith(f"error: {expected}")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("label", [-1, 10, "3", True, 2.0])
def test_a_caption_file_label_outside_the_classes_is_one_line(tmp_path, label):
    """`t2i embed minilm fmnist` on a captions/fmnist.json whose first class has a label that
    is not an integer 0-9: one line naming the file and the entry, before any embedding."""
    shutil.copytree(REPO / "captions", tmp_path / "captions")
    path = tmp_path / "captions" / "fmnist.json"
    data = json.loads(path.read_text())
    data["classes"][0]["label"] = label
    path.write_text(json.dumps(data))
    args = ["embed", "minilm", "fmnist", "--params", str(REPO / "params.yaml")]
    line = one_stderr_line(run_t2i(args, tmp_path))
    assert line == (
        f"error: captions/fmnist.json: classes[0].label is {json.dumps(label)}; "
        "expected a class index, an integer 0-9"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions"]


DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit: json raises RecursionError
DEEP_65 = '{"a": ' * 65 + "1" + "}" * 65  # parses, but nests deeper than any JSON of ours


@pytest.mark.parametrize("text", [DEEP, DEEP_65])
def test_nested_metrics_json_is_one_line(tmp_path, monkeypatch, text):
    metrics = tmp_path / "metrics" / "fmnist_label" / "eval.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(text)
    monkeypatch.chdir(tmp_path)
    args = ["report", "fmnist_label", "--params", str(REPO / "params.yaml")]
    assert one_error_line(CliRunner().invoke(app, args)) == (
        "error: metrics/fmnist_label/eval.json: not a readable metrics JSON (nested too deeply: "
        "more than 64 levels); rerun the stage that writes it (dvc repro) or delete it"
    )
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (DEEP.encode(), "nested too deeply: more than 64 levels"),
        (b'{"classes": [{"label": 0, "train": [{"caption": "caf\xe9"}]}]}', "byte 0xe9 at offset"),
    ],
)
def test_a_nested_or_latin1_caption_set_is_one_line(tmp_path, data, why):
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "fmnist.json").write_bytes(data)
    args = ["embed", "minilm", "fmnist", "--params", str(REPO / "params.yaml")]
    line = one_stderr_line(run_t2i(args, tmp_path))
    assert line.startswith(f"error: captions/fmnist.json: not a readable caption set JSON ({why}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions"]


def test_nested_coco_annotations_are_one_line(tmp_path, monkeypatch):
    from .coco_fixture import make_coco_fixture
    from .test_coco_hostile import stage_params, t2i

    fixture = make_coco_fixture(tmp_path / "coco")
    annotations = fixture.root / "annotations" / "captions_train2014.json"
    annotations.write_text('{"images": ' + DEEP + ', "annotations": []}')
    stage_params(tmp_path, source="local", local_root=str(fixture.root))
    line = one_error_line(t2i(tmp_path, monkeypatch, "download", "coco"))
    assert line.startswith("error: ") and line.endswith(
        "captions_train2014.json: not a readable COCO captions JSON (nested too deeply)"
    )
    assert not (tmp_path / "data" / "coco" / "manifest").exists()


def test_a_nested_model_config_is_one_line(tmp_path, label_model):
    (label_model / "config.json").write_text(DEEP)
    line = one_error_line(generate(label_model, tmp_path / "x.png", "--label", "bag"))
    assert line == (
        f"error: {label_model}/config.json: not a readable config (nested too deeply: more "
        "than 64 levels); train it again"
    )
    assert not (tmp_path / "x.png").exists()


# A full disk, for real: a tmpfs of a few KB mounted over the stage's output folder, in a mount
# namespace of its own (`unshare`), so the mount is seen by that one command only.
FULL_DISK = """
mkdir -p "$FULL" && mount -t tmpfs -o size=8k tmpfs "$FULL" || exit 99
"$@"; rc=$?
(cd "$FULL" && find . -mindepth 1 | sort) > "$LISTING"
exit $rc
"""


def on_a_full_disk(workdir, full: str, args: list[str], program: str = "t2i"):
    """``PROGRAM ARGS`` in ``workdir`` with ``workdir/full`` on a full disk; (its result, what
    it left there)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare (util-linux) here")
    listing = workdir.parent / "listing.txt"
    env = {**run_env(), "FULL": full, "LISTING": str(listing)}
    command = ["unshare", "--map-root-user", "--mount", "sh", "-c", FULL_DISK, "sh", program, *args]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True)
    if result.returncode == 99 or not listing.exists():  # unshare or mount refused here
        pytest.skip(f"no mount namespace for a tmpfs here: {result.stderr.decode()[-200:]}")
    return result, listing.read_text().split()


def test_disk_full_while_packing_is_one_line_and_leaves_no_shard(tmp_path):
    from .test_coco_hostile import pack_workdir

    workdir = pack_workdir(tmp_path, 4)
    result, left = on_a_full_disk(workdir, "data/shards/coco", ["pack", "coco"])
    line = one_stderr_line(result)
    assert line == "error: disk full while writing data/shards/coco/train-000000.tar"
    assert left == []


def test_disk_full_while_embedding_is_one_line_and_leaves_no_shard(tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(REPO / "captions", workdir / "captions")
    params = str(REPO / "params.yaml")
    folder = "data/embeddings/minilm/fmnist"
    result, left = on_a_full_disk(
        workdir, folder, ["embed", "minilm", "fmnist", "--params", params]
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: disk full while writing {folder}/part-00000.parquet"], stderr
    assert left == []


def test_disk_full_while_training_is_one_line_and_leaves_no_state(repo_copy):
    workdir = repo_copy
    set_param(workdir, "models.fmnist_label.train", "epochs", 1)
    set_param(workdir, "models.fmnist_label.train", "train_limit", 256)
    download = run_t2i(["download", "fmnist"], workdir)
    assert download.returncode == 0, download.stderr.decode()
    result, left = on_a_full_disk(workdir, "models/fmnist_label", ["train", "fmnist_label"])
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    expected = "models/fmnist_label/state/train_state.safetensors"
    assert errors == [f"error: disk full while writing {expected}"], stderr
    # the model's lock (pipeline/lock.py: the file stays, the flock dies with the process)
    # and the folder it made; no other file, no temp file
    assert left == ["./.lock", "./state"]


@pytest.mark.e2e
def test_disk_full_under_dvc_repro_is_one_line_and_records_nothing(repo_copy):
    """`dvc repro` of the embed stage with data/embeddings on a full disk: the stage's one
    line in DVC's output, no traceback, no shard, and no dvc.lock entry."""
    result, left = on_a_full_disk(
        repo_copy, "data/embeddings", ["repro", "embed@minilm-fmnist"], program="dvc"
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    expected = "data/embeddings/minilm/fmnist/part-00000.parquet"
    assert errors == [f"error: disk full while writing {expected}"], output
    assert "failed to reproduce 'embed@minilm-fmnist'" in output
    assert left == ["./minilm", "./minilm/fmnist"]  # folders, no file and no temp file
    assert not (repo_copy / "dvc.lock").exists()
