"""The caption-embedding cache: encoders, Parquet shards, and the embed stage."""

import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.config import parse_params
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.embeddings import read_embeddings, read_metadata, write_embedding_shard
from pipeline.encoders import load_encoder
from pipeline.errors import PipelineError

from .conftest import REPO, copy_repo, dvc, params_with, repo_params, run_env, stages_run
from .encoder_fixtures import make_tiny_clip, make_tiny_t5

EDGE_CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "",
    "a very long caption about a kitchen " * 20,  # > 77 CLIP tokens
    "Ünïcödé: a café in 東京 with crème brûlée 🍰",
    "two dogs",
    "A kitchen with a stove, a sink and a refrigerator next to a window.",
]


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders")
    specs = {
        "clip-vit-b-32": make_tiny_clip(folder / "clip"),
        "t5-small": make_tiny_t5(folder / "t5"),
    }
    raw = repo_params()
    raw["embed"] |= specs
    return specs, parse_params(raw).embed


@pytest.mark.parametrize("name", ["clip-vit-b-32", "t5-small"])
def test_fast_path_equals_plain_path(tiny_encoders, name):
    _, embed = tiny_encoders
    encoder = load_encoder(name, embed.encoder(name), torch.device("cpu"))
    fast = encoder.encode(EDGE_CAPTIONS, batch_size=4)
    plain = encoder.encode_plain(EDGE_CAPTIONS, batch_size=4)
    assert fast.shape == (len(EDGE_CAPTIONS), encoder.info.dim)
    assert np.abs(fast - plain).max() <= 1e-5
    assert np.isfinite(fast).all()


def test_clip_counts_and_truncates_long_captions(tiny_encoders):
    _, embed = tiny_encoders
    encoder = load_encoder("clip-vit-b-32", embed.encoder("clip-vit-b-32"), torch.device("cpu"))
    counts = encoder.token_counts(EDGE_CAPTIONS)
    assert counts[1] == 2  # an empty caption is start + end tokens
    assert counts[2] > 77 and sum(c > encoder.info.max_tokens for c in counts) == 1
    truncated = encoder.encode([EDGE_CAPTIONS[2]])
    longer = encoder.encode([EDGE_CAPTIONS[2] + " and more words at the end"])
    np.testing.assert_allclose(truncated, longer, atol=1e-5)  # the tail past 77 is cut


def test_weights_identity_is_recorded(tiny_encoders):
    specs, embed = tiny_encoders
    encoder = load_encoder("clip-vit-b-32", embed.encoder("clip-vit-b-32"), torch.device("cpu"))
    import hashlib
    from pathlib import Path

    expected = hashlib.sha256(Path(specs["clip-vit-b-32"]["weights"]).read_bytes()).hexdigest()
    assert encoder.info.weights_sha256 == expected
    assert encoder.info.libraries["open_clip_torch"]


@pytest.mark.parametrize(
    ("name", "section", "match"),
    [
        ("clip-vit-b-32", {"weights": "/nonexistent/clip.safetensors"}, "neither a file nor"),
        ("clip-vit-b-32", {"weights": "x.pt", "config_file": "/nonexistent.json"}, "not found"),
        ("t5-small", {"weights": "/nonexistent/t5"}, "no such folder"),
    ],
)
def test_missing_local_weights_stop_with_the_key(name, section, match):
    raw = repo_params()
    raw["embed"][name] |= section
    embed = parse_params(raw).embed
    with pytest.raises(PipelineError, match=rf"embed\.{name}\.weights: .*{match}"):
        load_encoder(name, embed.encoder(name), torch.device("cpu"))


@pytest.mark.parametrize(
    ("name", "weights", "match"),
    [("clip-vit-b-32", "openai", "download failed"), ("t5-small", "google-t5/t5-small", "hub")],
)
def test_offline_hub_weights_give_one_clear_error_and_no_output(tmp_path, name, weights, match):
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions/fmnist.json").write_text((REPO / "captions/fmnist.json").read_text())
    params = yaml.safe_dump(params_with(f"embed.{name}.weights", weights), sort_keys=False)
    (tmp_path / "params.yaml").write_text(params)
    env = {**run_env(), "HF_HUB_OFFLINE": "1"}  # as on a machine without network
    result = subprocess.run(
        ["t2i", "embed", name, "fmnist"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"embed.{name}.weights" in result.stderr and match in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # no random-weight embeddings, nothing at all


def test_shard_schema_metadata_and_vectorised_reader(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    meta = {"encoder": "x", "weights_sha256": "ab", "dim": 8}
    write_embedding_shard(
        tmp_path / "part-00000.parquet",
        [1, 1, 2, 3, 3],
        [10, 11, 20, 30, 31],
        list("abcde"),
        vectors,
        "float16",
        meta,
    )
    schema = pq.read_schema(tmp_path / "part-00000.parquet")
    assert str(schema.field("embedding").type) == "fixed_size_list<element: halffloat>[8]"
    assert (
        pq.ParquetFile(tmp_path / "part-00000.parquet").metadata.row_group(0).column(0).compression
        == "ZSTD"
    )
    assert read_metadata(tmp_path / "part-00000.parquet") == meta
    columns, values = read_embeddings(tmp_path)
    assert values.dtype == np.float16 and values.shape == (5, 8)
    np.testing.assert_allclose(values, vectors, atol=2e-3)
    assert columns["caption_id"].tolist() == [10, 11, 20, 30, 31] and columns["caption"][4] == "e"
    _, tensor = read_embeddings(tmp_path, as_torch=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (5, 8)


def test_reader_names_a_folder_without_shards(tmp_path):
    with pytest.raises(PipelineError, match="no embedding shards"):
        read_embeddings(tmp_path)


def test_fmnist_caption_set_keeps_validation_and_held_out_wording_apart():
    caption_set = fmnist_caption_set()
    texts = {split: {r["caption"] for r in rows} for split, rows in caption_set.items()}
    ids = {split: {r["caption_id"] for r in rows} for split, rows in caption_set.items()}
    for a, b in (("train", "val"), ("train", "heldout"), ("val", "heldout")):
        assert not texts[a] & texts[b] and not ids[a] & ids[b], (a, b)
    for split in ("train", "val", "heldout"):
        assert {r["image_id"] for r in caption_set[split]} == set(range(10)), split


def _embed(repo):
    result = subprocess.run(
        ["t2i", "embed", "minilm", "fmnist"],
        cwd=repo,
        env=run_env(repo),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return {p.name: p.read_bytes() for p in (repo / "data/embeddings/minilm/fmnist").glob("*")}


@pytest.mark.e2e
def test_dvc_repro_embeds_fmnist_captions_with_the_real_minilm(finished_root_run, tmp_path):
    assert "embed@minilm-fmnist" in stages_run(finished_root_run.output)
    repo_copy = copy_repo(finished_root_run.repo, tmp_path)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["embed"]["clip-vit-b-32"]["weights"] = "/other/clip.safetensors"
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "embed@minilm-fmnist" not in dvc(repo_copy, "status", "embed@minilm-fmnist")
    params["embed"]["minilm"]["weights"] = str(REPO / "nowhere")  # other weights, new shards
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "embed.minilm" in dvc(repo_copy, "status", "embed@minilm-fmnist")
    params["embed"]["minilm"]["weights"] = "package"
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    folder = repo_copy / "data/embeddings/minilm/fmnist"
    columns, values = read_embeddings(folder)
    assert values.shape == (sum(map(len, fmnist_caption_set().values())), 384)
    np.testing.assert_allclose(np.linalg.norm(values.astype(np.float32), axis=1), 1, atol=2e-3)
    meta = read_metadata(folder / "part-00000.parquet")
    assert meta["encoder"] == "minilm" and meta["normalized"] and len(meta["weights_sha256"]) == 64
    # Real weights carry meaning: held-out wording lands nearest its own class's phrasings.
    caption_set = fmnist_caption_set()
    heldout = {r["caption_id"] for r in caption_set["heldout"]}
    train = {r["caption_id"] for r in caption_set["train"]}
    is_heldout = np.array([c in heldout for c in columns["caption_id"]])
    is_train = np.array([c in train for c in columns["caption_id"]])
    labels, v = columns["image_id"], values.astype(np.float32)
    centroids = np.stack([v[is_train & (labels == k)].mean(0) for k in range(10)])
    accuracy = ((v[is_heldout] @ centroids.T).argmax(1) == labels[is_heldout]).mean()
    assert accuracy >= 0.8


@pytest.mark.e2e
def test_killed_or_split_embedding_runs_end_with_identical_shards(repo_copy):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["embed"].update(rows_per_shard=100, device="cpu")  # 260 captions: 3 shards
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    whole = _embed(repo_copy)
    assert sorted(whole) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]

    folder = repo_copy / "data/embeddings/minilm/fmnist"
    (folder / "part-00001.parquet").unlink()  # a kill after the first shard...
    (folder / ".part-00001.parquet.x.tmp").write_bytes(b"half")  # ...mid-write of the second
    assert _embed(repo_copy) == whole

    for path in folder.glob("*"):
        path.unlink()
    torchrun = ["torchrun", "--nproc_per_node=2", "--no-python", "t2i", "embed", "minilm", "fmnist"]
    result = subprocess.run(
        torchrun, cwd=repo_copy, env=run_env(repo_copy), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    after = {p.name: p.read_bytes() for p in folder.glob("*")}
    assert after == whole  # two ranks, each its own shards, the same files as one process
    assert read_metadata(folder / "part-00002.parquet")["shards"] == 3
