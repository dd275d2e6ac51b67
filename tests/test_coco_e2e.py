"""`dvc repro coco/dvc.yaml` on the COCO-format fixture served from a loopback server."""

import io
import json
import math
import re
import subprocess
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from pipeline.data.embeddings import read_embeddings, read_metadata
from pipeline.data.shards import read_samples
from pipeline.figures import PAD

from .coco_fixture import BAD_TRAIN_IDS, loopback_download, make_coco_fixture, serve
from .conftest import (
    LoopbackServer,
    copy_repo,
    dvc,
    make_repo_copy,
    run_env,
    set_param,
    stages_run,
)
from .encoder_fixtures import make_random_inception, make_tiny_clip, make_tiny_t5
from .test_train import overwrite_one_tensor

pytestmark = pytest.mark.e2e


def coco_params(repo, encoders=None, evaluate=None, **download):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["embed"].update(device="cpu", rows_per_shard=20, **(encoders or {}))
    params["download"]["coco"].update(
        subsets={
            "train": {"split": "train2014", "num_images": None, "seed": 0},
            "val": {"split": "val2014", "num_images": 2, "seed": 1},
        },
        retries=2,
        backoff_s=0.01,
        timeout_s=5,
        workers=4,
        max_failure_rate=0.5,
        **download,
    )
    params["pack"]["coco"].update(image_size=32, shard_maxcount=3, workers=2)
    models = params["models"]
    for model in ("coco_clip", "coco_t5"):
        models[model]["train"].update(
            epochs=2,
            batch_size=4,
            workers=1,
            shuffle_buffer=8,
            device="cpu",
            keep_epochs=[1, 2],
            cond_null_p=0.25,  # trained for guidance: the evaluations sample with w = 1
        )
        models[model]["arch"]["latent_dim"] = 8
    models["coco_clip"]["arch"]["width"] = 8
    for model in ("coco_clip", "coco_t5"):
        section, changes = models[model]["evaluate"], (evaluate or {}).get(model, {})
        models[model]["evaluate"] = {
            **section,
            "device": "cpu",
            "samples": 2,
            "figure_images": 3,
            "metric_images": 6,
            "kid_subsets": 5,
            "guidance": 1.0,
            **changes,
            # the keys it names, the rest as params.yaml has them; a new mapping, so the
            # file has no YAML alias (the strict reader refuses them)
            "clip_score": {**section["clip_score"], **changes.get("clip_score", {})},
        }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_finite_or_absent(node, path="eval.json"):
    """Every number is finite; a null value sits beside a non-empty "absent" reason."""
    if isinstance(node, dict):
        if "value" in node and node["value"] is None:
            assert isinstance(node.get("absent"), str) and node["absent"], path
        for key, value in node.items():
            if not (key == "value" and value is None):
                assert_finite_or_absent(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            assert_finite_or_absent(value, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        assert math.isfinite(node), path
    else:
        assert node is None or isinstance(node, (str, bool)), path


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    """One `dvc repro coco/dvc.yaml` on the fixture, from a loopback server; the tests below
    each check one part of what it made."""
    tmp = tmp_path_factory.mktemp("coco_e2e")
    repo, server = make_repo_copy(tmp), LoopbackServer()
    serve(server, make_coco_fixture(tmp / "coco", server.url))
    encoders = {"clip-vit-b-32": make_tiny_clip(tmp / "clip"), "t5-small": make_tiny_t5(tmp / "t5")}
    missing = str(tmp / "missing" / "weights.pth")
    evaluate = {  # coco_clip scores with test weights; coco_t5's are missing
        "coco_clip": {
            "inception_weights": str(make_random_inception(tmp / "inc.pth")),
            "clip_score": encoders["clip-vit-b-32"],
        },
        "coco_t5": {
            "inception_weights": missing,
            "clip_score": {**encoders["clip-vit-b-32"], "weights": missing},
        },
    }
    coco_params(repo, encoders, evaluate, **loopback_download(server.url))
    output = dvc(repo, "repro", "coco/dvc.yaml")
    yield SimpleNamespace(repo=repo, tmp=tmp, server=server, output=output)
    server.close()


def eval_json(repo, model: str) -> dict:
    return json.loads((repo / "metrics" / model / "eval.json").read_text())


def test_repro_runs_every_coco_stage(coco_run):
    assert stages_run(coco_run.output) == {
        "coco/dvc.yaml:coco_download",
        "coco/dvc.yaml:coco_pack",
        "coco/dvc.yaml:embed@clip-vit-b-32-coco",
        "coco/dvc.yaml:embed@t5-small-coco",
        "coco/dvc.yaml:train@coco_clip",
        "coco/dvc.yaml:train@coco_t5",
        "coco/dvc.yaml:evaluate@coco_clip",
        "coco/dvc.yaml:evaluate@coco_t5",
    }


def test_the_manifest_records_every_images_fate(coco_run):
    manifest = pq.read_table(coco_run.repo / "data/coco/manifest/train.parquet").to_pylist()
    assert [r["image_id"] for r in manifest] == list(range(1, 9))
    assert {r["image_id"] for r in manifest if r["status"] == "failed"} == BAD_TRAIN_IDS
    summary = json.loads((coco_run.repo / "metrics/coco/download.json").read_text())
    assert summary["train"]["failed"] == 3 and summary["val"]["images"] == 2


def test_shards_hold_square_rgb_images_with_their_captions(coco_run):
    index = json.loads((coco_run.repo / "data/shards/coco/index.json").read_text())
    assert index["subsets"]["train"]["shards"] == ["train-000000.tar", "train-000001.tar"]
    shards = sorted((coco_run.repo / "data/shards/coco").glob("train-*.tar"))
    samples = list(read_samples(shards))
    assert [s["json"]["image_id"] for s in samples] == [1, 2, 3, 4, 8]
    assert samples[0]["__key__"] == "000000000001"
    assert samples[2]["json"]["captions"][0] == "A gray photo number 3, take 0."
    assert len(samples[2]["json"]["captions"]) == 6
    assert samples[3]["json"]["original_size"] == [64, 48]
    for sample in samples:
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.mode == "RGB" and image.size == (32, 32)  # gray and CMYK become RGB


def test_every_caption_is_embedded_once_by_each_encoder(coco_run):
    repo = coco_run.repo
    packed = list(read_samples(sorted((repo / "data/shards/coco").glob("*.tar"))))
    expected_captions = sum(len(s["json"]["captions"]) for s in packed)
    expected_ids = {s["json"]["image_id"] for s in packed}
    for encoder, dim in (("clip-vit-b-32", 16), ("t5-small", 16)):
        folder = repo / "data/embeddings" / encoder / "coco"
        columns, values = read_embeddings(folder)
        assert values.shape == (expected_captions, dim) and values.dtype == np.float16
        assert len(list(folder.glob("part-*.parquet"))) == -(-expected_captions // 20)
        assert set(columns["image_id"].tolist()) == expected_ids
        assert read_metadata(folder / "part-00000.parquet")["encoder"] == encoder


def test_each_model_trains_and_keeps_the_weights_of_its_kept_epochs(coco_run):
    for model, kind in (("coco_clip", "cvae_clip"), ("coco_t5", "cvae_gated")):
        folder = coco_run.repo / "models" / model
        config = json.loads((folder / "config.json").read_text())
        assert config["class"] == kind and config["model"] == kind and config["name"] == model
        assert config["image_size"] == 32 and config["text_dim"] == 16
        assert config["image_shape"] == [3, 32, 32] and config["cond_null_p"] == 0.25
        assert (folder / "epochs/epoch-0001.safetensors").is_file()  # kept for Figs. 9 and 10
        live = json.loads((coco_run.repo / "metrics" / model / "train/metrics.json").read_text())
        assert live["step"] == 1 and live["train"]["loss"] > 0 and live["test"]["loss"] > 0


def test_evaluation_writes_finite_metrics_and_the_papers_figures(coco_run):
    for model in ("coco_clip", "coco_t5"):
        metrics = eval_json(coco_run.repo, model)
        recon = metrics["reconstruction"]
        assert recon["images"] == 2 and 0 < recon["mse"] < 1 and -1 <= recon["ssim"] <= 1
        assert recon["psnr_db"] > 0 and metrics["conditions"]["image_size"] == 32
        folder = coco_run.repo / "reports" / model
        figures = {p.name: Image.open(p) for p in folder.glob("*.png")}
        assert set(figures) == {
            "fig6_captions.png",
            "fig7_heldout.png",
            "fig8_unseen.png",
            "fig9_10_epochs.png",
        }
        assert figures["fig6_captions.png"].height > 5 * 64  # a row for each paper caption
        assert figures["fig9_10_epochs.png"].height > 3 * 4 * 64  # final + 2 kept epochs, 4 each
        assert_finite_or_absent(metrics)  # every number finite, or absent with its reason
    assert "test_nelbo_nats" in eval_json(coco_run.repo, "coco_clip")


def test_caption_only_samples_are_scored_with_their_conditions(coco_run):
    scored = eval_json(coco_run.repo, "coco_clip")["caption_only"]
    assert "absent" not in scored["fid"], scored["fid"]
    assert scored["fid"]["value"] > 0
    assert scored["fid"]["conditions"]["samples"] == 2 == scored["fid"]["conditions"]["real_images"]
    assert scored["fid"]["conditions"]["image_size"] == 32
    assert len(scored["fid"]["conditions"]["weights_sha256"]) == 64
    assert "torchmetrics" in scored["fid"]["conditions"]["tool"]
    assert isinstance(scored["kid"]["value"], float) and scored["kid"]["std"] >= 0
    assert scored["kid"]["conditions"]["kid_subset_size"] == 2
    for key in ("value", "real_images", "mismatched_captions"):
        assert 0 <= scored["clipscore_100"][key] <= 100 and 0 <= scored["clip_s"][key] <= 2.5
    assert 0 <= scored["clip_r_precision"]["value"] <= 1
    assert scored["clip_r_precision"]["candidates"] == 2  # 2 held-out captions in all
    for name in ("clip_s", "clipscore_100", "clip_r_precision"):
        assert scored[name]["conditions"]["weights"] == "tiny-clip/" + str(
            coco_run.tmp / "clip/tiny-clip.safetensors"
        )
        assert scored[name]["conditions"]["model"] == "tiny-clip"


def test_missing_weights_leave_their_metrics_absent_with_the_reason(coco_run):
    absent = eval_json(coco_run.repo, "coco_t5")["caption_only"]
    for metric in ("fid", "kid"):
        assert absent[metric]["value"] is None
        assert (
            "models.coco_t5.evaluate.inception_weights: no Inception weights file"
            in absent[metric]["absent"]
        )
    for name in ("clip_s", "clipscore_100", "clip_r_precision"):
        assert absent[name]["value"] is None
        assert "models.coco_t5.evaluate.clip_score.weights" in absent[name]["absent"]


@pytest.mark.parametrize("model", ["coco_clip", "coco_t5"])
def test_generate_draws_rgb_grids_from_a_trained_coco_model(coco_run, model):
    out = coco_run.tmp / f"{model}.png"
    run = subprocess.run(
        [
            "t2i",
            "generate",
            "--model",
            f"models/{model}",
            "--caption",
            "a cat on a sofa",
            "-n",
            "4",
            "--columns",
            "4",
            "-o",
            str(out),
        ],
        cwd=coco_run.repo,
        env=run_env(coco_run.repo),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    image = Image.open(out)  # 32x32 tiles (the packed size), drawn at 2x
    assert image.mode == "RGB" and image.size == (4 * 66 + 2, 66 + 2)


@pytest.mark.parametrize("model", ["coco_clip", "coco_t5"])
def test_guided_caption_only_samples_are_finite_and_move_with_w(coco_run, model):
    """§3.2.1's caption-only generation with guidance, from the models trained with
    condition dropout on the photo fixture; `t2i generate --guidance` draws them too."""
    from pipeline.checkpoint import load_model
    from pipeline.evaluate import sample_images

    live = json.loads((coco_run.repo / "metrics" / model / "train/metrics.json").read_text())
    assert math.isfinite(live["train"]["loss"]) and math.isfinite(live["test"]["loss"])
    params = yaml.safe_load((coco_run.repo / "params.yaml").read_text())
    assert params["models"][model]["train"]["cond_null_p"] == 0.25
    conditions = eval_json(coco_run.repo, model)["conditions"]
    assert conditions["caption_only"] == {"guidance": 1.0, "temperature": 1.0}
    trained, _ = load_model(coco_run.repo / "models" / model)
    c = torch.randn(3, 16)
    samples = {
        w: sample_images(trained, c, torch.Generator().manual_seed(0), 1.0, w) for w in (0, 1, 3)
    }
    for images in samples.values():
        assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
    assert (samples[1] - samples[0]).abs().max() > 1e-4
    assert (samples[3] - samples[0]).abs().max() > (samples[1] - samples[0]).abs().max()
    out = coco_run.tmp / f"{model}-guided.png"
    command = ["t2i", "generate", "--model", f"models/{model}", "--caption", "a red bus"]
    command += ["--guidance", "2", "--temperature", "0.8", "-n", "2", "-o", str(out)]
    run = subprocess.run(
        command, cwd=coco_run.repo, env=run_env(coco_run.repo), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert Image.open(out).mode == "RGB"


def test_weights_placed_in_weights_make_exactly_the_two_evaluate_stages_stale(coco_run):
    repo = coco_run.repo
    assert "up to date" in dvc(repo, "status", "coco/dvc.yaml")
    (repo / "weights/weights-inception-2015-12-05-6726825d.pth").write_bytes(b"weights")
    stale = re.findall(r"^(\S+):$", dvc(repo, "status", "coco/dvc.yaml"), re.MULTILINE)
    (repo / "weights/weights-inception-2015-12-05-6726825d.pth").unlink()
    assert set(stale) == {"coco/dvc.yaml:evaluate@coco_clip", "coco/dvc.yaml:evaluate@coco_t5"}


def test_a_rerun_of_pack_writes_byte_identical_shards(coco_run):
    repo = coco_run.repo
    before = {p.name: p.read_bytes() for p in (repo / "data/shards/coco").glob("*.tar")}
    assert stages_run(dvc(repo, "repro", "-f", "-s", "coco/dvc.yaml:coco_pack")) == {
        "coco/dvc.yaml:coco_pack"
    }
    after = {p.name: p.read_bytes() for p in (repo / "data/shards/coco").glob("*.tar")}
    assert before == after


def test_a_rerun_of_download_resumes_from_the_store(coco_run):
    image = "/train2014/COCO_train2014_000000000001.jpg"
    hits = coco_run.server.hits[image]
    dvc(coco_run.repo, "repro", "-f", "-s", "coco/dvc.yaml:coco_download")
    assert coco_run.server.hits[image] == hits  # valid images are not fetched again


def test_local_coco_root_and_offline_message(repo_copy, tmp_path):
    fixture = make_coco_fixture(tmp_path / "coco")
    coco_params(repo_copy, source="local", local_root=str(fixture.root))
    run = subprocess.run(
        ["t2i", "download", "coco"],
        cwd=repo_copy,
        env=run_env(repo_copy),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    rows = pq.read_table(repo_copy / "data/coco/manifest/train.parquet").to_pylist()
    assert rows[0]["path"].startswith(str(fixture.root))  # read in place
    assert not (repo_copy / "data/coco/store").exists()  # nothing copied

    coco_params(repo_copy, source="official", annotations_url="http://127.0.0.1:9/a.zip")
    run = subprocess.run(
        ["t2i", "download", "coco"],
        cwd=repo_copy,
        env=run_env(repo_copy),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "could not be downloaded" in run.stderr and "download.coco.local_root" in run.stderr
    assert "Traceback" not in run.stderr


def kept(repo, model: str = "coco_t5") -> dict[str, bytes]:
    folder = repo / "models" / model / "epochs"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def stage_error_line(repo, *args: str) -> str:
    """The one `error: ` line of a failed `t2i ARGS` in ``repo``; no traceback."""
    result = subprocess.run(
        ["t2i", *args], cwd=repo, env=run_env(repo), capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("damage", ["overwrite", "delete"])
def test_repro_rebuilds_a_changed_or_missing_kept_epoch(coco_run, tmp_path, damage):
    """Issue 21, case 1: never "resumes" past a damaged kept epoch nor records it."""
    repo = copy_repo(coco_run.repo, tmp_path)
    good, lock = kept(repo), (repo / "coco/dvc.lock").read_text()
    epoch1 = repo / "models/coco_t5/epochs/epoch-0001.safetensors"
    overwrite_one_tensor(epoch1) if damage == "overwrite" else epoch1.unlink()
    assert "coco/dvc.yaml:train@coco_t5" in stages_run(dvc(repo, "repro", "coco/dvc.yaml"))
    assert kept(repo) == good  # trained afresh: the same bytes as the first run
    assert (repo / "coco/dvc.lock").read_text() == lock
    assert "up to date" in dvc(repo, "status", "coco/dvc.yaml")


def test_evaluation_refuses_a_kept_epoch_changed_since_training(coco_run, tmp_path):
    repo = copy_repo(coco_run.repo, tmp_path)
    metrics = repo / "metrics/coco_t5/eval.json"
    before = metrics.read_bytes()
    overwrite_one_tensor(repo / "models/coco_t5/epochs/epoch-0001.safetensors")
    assert stage_error_line(repo, "evaluate", "coco_t5") == (
        "error: models.coco_t5.train.keep_epochs: models/coco_t5/epochs/epoch-0001.safetensors: "
        "changed since training wrote it (its sha256 differs); train again (dvc repro)"
    )
    (repo / "models/coco_t5/epochs/epoch-0002.safetensors").unlink()
    (repo / "models/coco_t5/epochs/epoch-0001.safetensors").write_bytes(
        kept(coco_run.repo)["epoch-0001.safetensors"]
    )
    assert stage_error_line(repo, "evaluate", "coco_t5") == (
        "error: models.coco_t5.train.keep_epochs: models/coco_t5/epochs/epoch-0002.safetensors: "
        "missing; train again (dvc repro)"
    )
    assert before and not metrics.exists()  # cleared at start: no metric of a failed run


def test_changing_keep_epochs_after_a_run_draws_exactly_the_epochs_it_names(coco_run, tmp_path):
    repo = copy_repo(coco_run.repo, tmp_path)
    good = kept(repo)
    figure = repo / "reports/coco_t5/fig9_10_epochs.png"
    height = Image.open(figure).height  # final + epochs 1 and 2
    set_param(repo, "models.coco_t5.train", "keep_epochs", [2])  # dropped: resumed, nothing trained
    assert stages_run(dvc(repo, "repro", "coco/dvc.yaml")) == {
        "coco/dvc.yaml:train@coco_t5",
        "coco/dvc.yaml:evaluate@coco_t5",
    }
    assert set(kept(repo)) == {"epoch-0002.safetensors", "kept.json"}
    assert kept(repo)["epoch-0002.safetensors"] == good["epoch-0002.safetensors"]
    row = (height - PAD) // 12  # a row per epoch caption (4) of final, epoch 1, epoch 2
    assert Image.open(figure).height == 8 * row + PAD  # final and epoch 2 only
    set_param(repo, "models.coco_t5.train", "keep_epochs", [1, 2])  # epoch 1 was not kept: afresh
    dvc(repo, "repro", "coco/dvc.yaml")
    assert kept(repo) == good and Image.open(figure).height == height
    set_param(repo, "models.coco_t5.train", "keep_epochs", [3])  # beyond the run: one line
    result = subprocess.run(
        ["dvc", "repro", "coco/dvc.yaml"],
        cwd=repo,
        env=run_env(repo),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "error: train coco_t5: keep_epochs [3] outside 1..epochs (2)" in result.stderr


def test_coco_evaluate_writes_its_metrics_after_every_figure(coco_run, tmp_path):
    """Numbers that would change (another seed), then the last figure cannot be written (its
    path is a folder): no eval.json, neither this run's nor the last one's beside figures it
    did not draw."""
    repo = copy_repo(coco_run.repo, tmp_path)
    metrics = repo / "metrics/coco_clip/eval.json"
    before = metrics.read_bytes()
    set_param(repo, "models.coco_clip.evaluate", "seed", 1)
    figure = repo / "reports/coco_clip/fig9_10_epochs.png"
    figure.unlink()
    (figure / "blocker").mkdir(parents=True)
    result = subprocess.run(
        ["t2i", "evaluate", "coco_clip"], cwd=repo, env=run_env(repo), capture_output=True
    )
    assert result.returncode != 0
    assert before and not metrics.exists()
