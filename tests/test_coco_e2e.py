"""`dvc repro coco/dvc.yaml` on the COCO-format fixture served from a loopback server."""

import io
import json
import math
import re
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.data.embeddings import read_embeddings, read_metadata
from pipeline.data.shards import read_samples

from .coco_fixture import BAD_TRAIN_IDS, ZIP_PATH, make_coco_fixture, serve
from .conftest import dvc, run_env, stages_run
from .encoder_fixtures import make_random_inception, make_tiny_clip, make_tiny_t5

pytestmark = pytest.mark.e2e


def coco_params(repo, encoders=None, evaluate=None, **download):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["embed"].update(device="cpu", rows_per_shard=20, **(encoders or {}))
    params["download"]["coco"].update(
        subsets={"train": {"split": "train2014", "num_images": None, "seed": 0},
                 "val": {"split": "val2014", "num_images": 2, "seed": 1}},
        retries=2, backoff_s=0.01, timeout_s=5, workers=4, max_failure_rate=0.5, **download,
    )  # fmt: skip
    params["pack"]["coco"].update(image_size=32, shard_maxcount=3, workers=2)
    for model in ("coco_clip", "coco_t5"):
        params["train"][model].update(epochs=2, batch_size=4, workers=1, shuffle_buffer=8,
                                      device="cpu", keep_epochs=[1, 2], latent_dim=8)  # fmt: skip
    params["train"]["coco_clip"]["width"] = 8
    for model in ("coco_clip", "coco_t5"):
        params["evaluate"][model] = {  # a copy: params.yaml shares one section (YAML anchor)
            **params["evaluate"][model], "device": "cpu", "samples": 2, "figure_images": 3,
            "metric_images": 6, "kid_subsets": 5, **(evaluate or {}).get(model, {}),
        }  # fmt: skip
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


def test_coco_download_pack_and_embed_on_the_fixture(repo_copy, tmp_path, http_server):
    fixture = make_coco_fixture(tmp_path / "coco", http_server.url)
    serve(http_server, fixture)
    encoders = {"clip-vit-b-32": make_tiny_clip(tmp_path / "clip"),
                "t5-small": make_tiny_t5(tmp_path / "t5")}  # fmt: skip
    missing = str(tmp_path / "missing" / "weights.pth")
    evaluate = {  # coco_clip scores with test weights; coco_t5's are missing
        "coco_clip": {"inception_weights": str(make_random_inception(tmp_path / "inc.pth")),
                      "clip_score": encoders["clip-vit-b-32"]},
        "coco_t5": {"inception_weights": missing,
                    "clip_score": {**encoders["clip-vit-b-32"], "weights": missing}},
    }  # fmt: skip
    coco_params(repo_copy, encoders, evaluate, annotations_url=http_server.url + ZIP_PATH)

    out = dvc(repo_copy, "repro", "coco/dvc.yaml")
    assert stages_run(out) == {
        "coco/dvc.yaml:coco_download", "coco/dvc.yaml:coco_pack",
        "coco/dvc.yaml:embed@clip-vit-b-32-coco", "coco/dvc.yaml:embed@t5-small-coco",
        "coco/dvc.yaml:train@coco_clip", "coco/dvc.yaml:train@coco_t5",
        "coco/dvc.yaml:evaluate@coco_clip", "coco/dvc.yaml:evaluate@coco_t5",
    }  # fmt: skip

    manifest = pq.read_table(repo_copy / "data/coco/manifest/train.parquet").to_pylist()
    assert [r["image_id"] for r in manifest] == list(range(1, 9))
    assert {r["image_id"] for r in manifest if r["status"] == "failed"} == BAD_TRAIN_IDS
    summary = json.loads((repo_copy / "metrics/coco/download.json").read_text())
    assert summary["train"]["failed"] == 3 and summary["val"]["images"] == 2

    index = json.loads((repo_copy / "data/shards/coco/index.json").read_text())
    assert index["subsets"]["train"]["shards"] == ["train-000000.tar", "train-000001.tar"]
    shards = sorted((repo_copy / "data/shards/coco").glob("train-*.tar"))
    samples = list(read_samples(shards))
    assert [s["json"]["image_id"] for s in samples] == [1, 2, 3, 4, 8]
    assert samples[0]["__key__"] == "000000000001"
    assert samples[2]["json"]["captions"][0] == "A gray photo number 3, take 0."
    assert len(samples[2]["json"]["captions"]) == 6
    assert samples[3]["json"]["original_size"] == [64, 48]
    for sample in samples:
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.mode == "RGB" and image.size == (32, 32)  # gray and CMYK become RGB

    # Every caption of every image that downloaded, in both subsets, embedded once.
    packed = list(read_samples(sorted((repo_copy / "data/shards/coco").glob("*.tar"))))
    expected_captions = sum(len(s["json"]["captions"]) for s in packed)
    expected_ids = {s["json"]["image_id"] for s in packed}
    for encoder, dim in (("clip-vit-b-32", 16), ("t5-small", 16)):
        folder = repo_copy / "data/embeddings" / encoder / "coco"
        columns, values = read_embeddings(folder)
        assert values.shape == (expected_captions, dim) and values.dtype == np.float16
        assert len(list(folder.glob("part-*.parquet"))) == -(-expected_captions // 20)
        assert set(columns["image_id"].tolist()) == expected_ids
        assert read_metadata(folder / "part-00000.parquet")["encoder"] == encoder

    for model, kind in (("coco_clip", "cvae_clip"), ("coco_t5", "cvae_gated")):
        folder = repo_copy / "models" / model
        config = json.loads((folder / "config.json").read_text())
        assert config["model"] == kind and config["image_size"] == 32 and config["text_dim"] == 16
        assert (folder / "epochs/epoch-0001.safetensors").is_file()  # kept for Figs. 9 and 10
        live = json.loads((repo_copy / "metrics" / model / "train/metrics.json").read_text())
        assert live["step"] == 1 and live["train"]["loss"] > 0 and live["test"]["loss"] > 0

    for model in ("coco_clip", "coco_t5"):
        metrics = json.loads((repo_copy / "metrics" / model / "eval.json").read_text())
        recon = metrics["reconstruction"]
        assert recon["images"] == 2 and 0 < recon["mse"] < 1 and -1 <= recon["ssim"] <= 1
        assert recon["psnr_db"] > 0 and metrics["conditions"]["image_size"] == 32
        figures = {p.name: Image.open(p) for p in (repo_copy / "reports" / model).glob("*.png")}
        assert set(figures) == {"fig6_captions.png", "fig7_heldout.png", "fig8_unseen.png",
                                "fig9_10_epochs.png"}  # fmt: skip
        assert figures["fig6_captions.png"].height > 5 * 64  # a row for each paper caption
        assert figures["fig9_10_epochs.png"].height > 3 * 4 * 64  # final + 2 kept epochs, 4 each
    assert "test_nelbo_nats" in json.loads((repo_copy / "metrics/coco_clip/eval.json").read_text())
    for model in ("coco_clip", "coco_t5"):  # every number finite, or absent with its reason
        eval_json = repo_copy / "metrics" / model / "eval.json"
        assert_finite_or_absent(json.loads(eval_json.read_text()))

    # Caption-only samples: FID, KID and CLIP score with their conditions...
    scored = json.loads((repo_copy / "metrics/coco_clip/eval.json").read_text())["caption_only"]
    assert "absent" not in scored["fid"], scored["fid"]
    assert scored["fid"]["value"] > 0
    assert scored["fid"]["conditions"]["samples"] == 2 == scored["fid"]["conditions"]["real_images"]
    assert scored["fid"]["conditions"]["image_size"] == 32
    assert len(scored["fid"]["conditions"]["weights_sha256"]) == 64
    assert "torchmetrics" in scored["fid"]["conditions"]["tool"]
    assert isinstance(scored["kid"]["value"], float) and scored["kid"]["std"] >= 0
    assert scored["kid"]["conditions"]["kid_subset_size"] == 2
    for key in ("value", "real_images", "mismatched_captions"):
        assert 0 <= scored["clip_score"][key] <= 100
    assert scored["clip_score"]["conditions"]["weights"] == "tiny-clip/" + str(
        tmp_path / "clip/tiny-clip.safetensors"
    )
    # ...and, where the weights are missing, absent with the reason while the rest completes.
    absent = json.loads((repo_copy / "metrics/coco_t5/eval.json").read_text())["caption_only"]
    for metric in ("fid", "kid"):
        assert absent[metric]["value"] is None
        assert (
            "evaluate.coco_t5.inception_weights: no Inception weights file"
            in absent[metric]["absent"]
        )
    assert absent["clip_score"]["value"] is None
    assert "evaluate.coco_t5.clip_score.weights" in absent["clip_score"]["absent"]

    # Weights placed in weights/ (where `t2i weights inception` saves them) make exactly the
    # two evaluate stages stale, so their absent metrics get computed on the next repro.
    assert "up to date" in dvc(repo_copy, "status", "coco/dvc.yaml")
    (repo_copy / "weights/weights-inception-2015-12-05-6726825d.pth").write_bytes(b"weights")
    stale = re.findall(r"^(\S+):$", dvc(repo_copy, "status", "coco/dvc.yaml"), re.MULTILINE)
    assert set(stale) == {"coco/dvc.yaml:evaluate@coco_clip", "coco/dvc.yaml:evaluate@coco_t5"}
    (repo_copy / "weights/weights-inception-2015-12-05-6726825d.pth").unlink()

    before = {p.name: p.read_bytes() for p in (repo_copy / "data/shards/coco").glob("*.tar")}
    assert stages_run(dvc(repo_copy, "repro", "-f", "-s", "coco/dvc.yaml:coco_pack")) == {
        "coco/dvc.yaml:coco_pack"
    }
    after = {p.name: p.read_bytes() for p in (repo_copy / "data/shards/coco").glob("*.tar")}
    assert before == after  # byte-identical tars on a rerun

    hits = dict(http_server.hits)
    dvc(repo_copy, "repro", "-f", "-s", "coco/dvc.yaml:coco_download")
    assert (
        http_server.hits["/train2014/COCO_train2014_000000000001.jpg"]
        == hits["/train2014/COCO_train2014_000000000001.jpg"]
    )  # resumed from the store: valid images are not fetched again


def test_local_coco_root_and_offline_message(repo_copy, tmp_path):
    fixture = make_coco_fixture(tmp_path / "coco")
    coco_params(repo_copy, source="local", local_root=str(fixture.root))
    run = subprocess.run(["t2i", "download", "coco"], cwd=repo_copy, env=run_env(repo_copy),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = pq.read_table(repo_copy / "data/coco/manifest/train.parquet").to_pylist()
    assert rows[0]["path"].startswith(str(fixture.root))  # read in place
    assert not (repo_copy / "data/coco/store").exists()  # nothing copied

    coco_params(repo_copy, source="official", annotations_url="http://127.0.0.1:9/a.zip")
    run = subprocess.run(["t2i", "download", "coco"], cwd=repo_copy, env=run_env(repo_copy),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1
    assert "could not be downloaded" in run.stderr and "download.coco.local_root" in run.stderr
    assert "Traceback" not in run.stderr
