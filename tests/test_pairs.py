"""Streamed (image, caption embedding) pairs, exact resume, and DDP with gloo on CPU."""

import io
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pipeline.data.embeddings import write_embedding_shard
from pipeline.data.pairs import ShardCaptionPairs
from pipeline.data.shards import write_shards
from pipeline.models.cvae_gated import CVAEGated
from pipeline.runtime import make_deterministic
from pipeline.train import FitData, fit, run_fingerprint

from .conftest import fit_run, fit_spec, run_env


def make_pairs_data(folder):
    """6 images of 32x32 in 3 shards, 2 or 3 captions each, and their 8-d embeddings."""
    rng = np.random.default_rng(0)
    samples, ids, captions = [], [], []
    for image_id in range(1, 7):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(out, "JPEG")
        caption_ids = [image_id * 10 + k for k in range(2 + image_id % 2)]
        samples.append(
            {
                "__key__": f"{image_id:012d}",
                "jpg": out.getvalue(),
                "json": {"image_id": image_id, "caption_ids": caption_ids},
            }
        )
        ids += [(image_id, c) for c in caption_ids]
        captions += [f"caption {c}" for c in caption_ids]
    shards = write_shards(iter(samples), folder / "shards", "train", maxcount=2, maxsize=10**9)
    vectors = np.arange(len(ids) * 8, dtype=np.float32).reshape(-1, 8) / 100
    write_embedding_shard(
        folder / "emb" / "part-00000.parquet",
        [i for i, _ in ids],
        [c for _, c in ids],
        captions,
        vectors,
        "float32",
        {},
    )
    return shards, folder / "emb", len(ids)


def caption_of(vector: torch.Tensor) -> int:
    return int(round(float(vector[0]) * 100)) // 8


def test_every_caption_makes_one_pair_and_the_order_follows_the_seed(tmp_path):
    shards, emb, n = make_pairs_data(tmp_path)
    data = ShardCaptionPairs(shards, emb, pairs=n, batch_size=4, shuffle_buffer=8, workers=0)
    assert data.text_dim == 8

    def order(generator, workers=0):
        data.workers = workers
        return [caption_of(c) for x, cs in data.batches(generator) for c in cs]

    plain = order(None)
    assert sorted(plain) == list(range(n)) and len(plain) == n == 15
    first = order(torch.Generator().manual_seed(1))
    assert Counter(first) == Counter(plain) and first != plain
    assert order(torch.Generator().manual_seed(1)) == first  # the seed fixes the order
    assert Counter(order(torch.Generator().manual_seed(1), workers=2)) == Counter(plain)
    x, _ = next(iter(data.batches()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and x.max() <= 1


def train_streamed(tmp_path, shards, emb, n, epochs, name):
    generator = make_deterministic(3, torch.device("cpu"))
    model = CVAEGated.of(
        image_size=32, text_dim=8, latent_dim=4, fusion="gated", beta=1.0, logvar_bound=8.0
    )
    data = ShardCaptionPairs(shards, emb, pairs=n, batch_size=4, shuffle_buffer=8, workers=1)
    fit(
        model,
        FitData(data, data),
        fit_spec(epochs=epochs, batch_size=4, lr=1e-3, grad_clip=1.0),
        fit_run(
            generator=generator,
            state_path=tmp_path / name / "state.safetensors",
            live_dir=tmp_path / name / "live",
            fingerprint=run_fingerprint(model, {}),
        ),
    )
    return model.state_dict()


def test_streamed_training_resumes_exactly(tmp_path):
    shards, emb, n = make_pairs_data(tmp_path)
    full = train_streamed(tmp_path, shards, emb, n, 3, "full")
    train_streamed(tmp_path, shards, emb, n, 1, "resumed")  # interrupted after epoch 1
    resumed = train_streamed(tmp_path, shards, emb, n, 3, "resumed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


DDP_DRIVER = """
import sys, torch, torch.distributed as dist
from pathlib import Path
from safetensors.torch import save_file
from pipeline.data.pairs import ShardCaptionPairs
from pipeline.models.cvae_gated import CVAEGated
from pipeline.runtime import make_deterministic
from pipeline.train import FitData, fit, run_fingerprint
from tests.conftest import fit_run, fit_spec

folder = Path(sys.argv[1])
dist.init_process_group("gloo")
rank = dist.get_rank()
generator = make_deterministic(3, torch.device("cpu"))
model = CVAEGated.of(image_size=32, text_dim=8, latent_dim=4, fusion="gated", beta=1.0,
                     logvar_bound=8.0)
data = ShardCaptionPairs(sorted((folder / "shards").glob("*.tar")), folder / "emb", pairs=15,
                         batch_size=2, shuffle_buffer=4, workers=0)
run = fit_run(generator=generator, state_path=folder / "run" / "state.safetensors",
              live_dir=folder / "run" / "live", fingerprint=run_fingerprint(model, {}))
history = fit(model, FitData(data, data), fit_spec(epochs=2, batch_size=2, lr=1e-3), run)
weights = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(weights, str(folder / f"rank{rank}.safetensors"))
print("images", rank, history[-1]["train/loss"])
dist.destroy_process_group()
"""


@pytest.mark.e2e
def test_ddp_with_gloo_two_ranks_end_with_identical_weights(tmp_path):
    make_pairs_data(tmp_path)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DDP_DRIVER))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        str(driver),
        str(tmp_path),
    ]
    result = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    losses = sorted(line.split()[2] for line in result.stdout.splitlines() if "images" in line)
    assert len(losses) == 2 and losses[0] == losses[1]  # both report the all-reduced epoch loss
    assert (tmp_path / "run/state.safetensors").is_file()  # written by rank 0
