"""Loading reads one consistent snapshot (issue 25): model.safetensors is opened once and read
whole, so a concurrent retrain that replaces it (os.replace) or rewrites it in place gives a
successful load or one line ("changed while reading ...; retry", "not a readable safetensors
file", a shape that config.json does not build), never a traceback or a crash. A file
missing while a writer holds the model's lock is "being written by ...; retry", a symlink, a
FIFO or an oversized file is refused in one line."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file, save

from pipeline import checkpoint
from pipeline.checkpoint import load_model, save_model, save_weights
from pipeline.errors import PipelineError
from pipeline.lock import model_lock
from pipeline.models.cvae_mlp import CVAEMLP

from .conftest import run_env
from .test_lock import HOLD, python

LOADS = 300

SIZES = {"input_dim": 784, "cond_dim": 10, "hidden_dim": 64, "latent_dim": 8, "fusion": "concat"}
META = {
    "name": "m",
    "class": "cvae_mlp",
    "data": "fmnist",
    "image_shape": (1, 28, 28),
    "conditioning": "label",
    "labels": [f"class {k}" for k in range(10)],
    "cond_null_p": 0.0,
}

LOADER = """
import json, sys
import torch
from collections import Counter
from pathlib import Path
from pipeline.checkpoint import load_model
from pipeline.errors import PipelineError
torch.set_num_threads(1)  # tiny tensors: a thread pool on shared cores is 10x slower
folder, loads = Path(sys.argv[1]), int(sys.argv[2])
outcomes = Counter()
for _ in range(loads):
    try:
        load_model(folder)
        outcomes["loaded"] += 1
    except PipelineError as exc:  # any other exception: a traceback and exit code 1
        outcomes[str(exc)] += 1
print(json.dumps(outcomes))
"""

WRITER = """
import os, sys
from pathlib import Path
target, stop = Path(sys.argv[1]), Path(sys.argv[2])
versions = [Path(p).read_bytes() for p in sys.argv[3:]]
i = 0
while not stop.exists():
    if i == 1:
        print("writing", flush=True)
    data = versions[i % len(versions)]
    if i % 2:  # a retrain's atomic replace: another whole file under the same name
        tmp = target.with_name("incoming.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    else:  # a writer that is not atomic: truncate, then write the file in two parts
        with open(target, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            handle.write(data[len(data) // 2 :])
    i += 1
print(i, flush=True)
"""


def model_folder(folder, seed=0, **sizes):
    torch.manual_seed(seed)
    save_model(folder, CVAEMLP.of(**{**SIZES, **sizes}), META)
    return folder


def weights_file(path, seed, **sizes):
    """A valid weights file of another training run (``sizes``: of another config)."""
    torch.manual_seed(seed)
    save_weights(path, CVAEMLP.of(**{**SIZES, **sizes}))
    return path


def test_loads_during_a_retrain_are_whole_or_one_line_never_a_traceback(tmp_path):
    """A loader process loads 300 times while a writer process keeps replacing
    model.safetensors: by os.replace with other weights of the same shape or of another
    config's shapes, and by truncating writes. The code before issue 25 read the header and
    the tensors in two opens (tracebacks from load_state_dict, or a SIGBUS on a file
    truncated under its mmap)."""
    folder = model_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    versions = [
        weights_file(tmp_path / "a.safetensors", seed=1),
        weights_file(tmp_path / "b.safetensors", seed=2),
        weights_file(tmp_path / "wider.safetensors", seed=3, hidden_dim=96),
    ]
    stop = tmp_path / "stop"
    writer = python(WRITER, weights, stop, *versions, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == "writing\n"
        loader = subprocess.run(
            [sys.executable, "-c", LOADER, str(folder), str(LOADS)],
            env=run_env(),
            capture_output=True,
            text=True,
        )
    finally:
        stop.touch()
        writes = int(writer.stdout.readline())
        writer.wait()
    assert loader.returncode == 0, f"{writes} writes meanwhile; {loader.stderr[-3000:]}"
    outcomes = Counter(json.loads(loader.stdout))
    assert sum(outcomes.values()) == LOADS
    allowed = (
        "changed while reading (a retrain is replacing it); retry",
        "not a readable safetensors file (",
        "tensor fc1.weight has shape [96, 794], but config.json builds [64, 794]",
    )
    for outcome in outcomes.keys() - {"loaded"}:
        assert outcome.startswith(f"{weights}: "), outcome
        assert "\n" not in outcome and any(a in outcome for a in allowed), outcome
    weights.write_bytes(versions[0].read_bytes())
    model, _ = load_model(folder)  # the writer stopped: a whole file loads
    assert torch.equal(model.state_dict()["fc1.weight"], load_file(str(versions[0]))["fc1.weight"])


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_file_missing_mid_retrain_says_who_is_writing_it(tmp_path, name):
    """DVC removes a stage's outputs before it runs: while `t2i train` holds the model's lock,
    a missing file is 'being written', not 'train the model first'."""
    folder = model_folder(tmp_path / "m")
    (folder / name).unlink()
    with pytest.raises(PipelineError) as missing:
        load_model(folder)
    assert str(missing.value) == f"{folder / name}: missing; train the model first (dvc repro)"
    holder = python(HOLD, folder, "t2i train m", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == f"held {holder.pid}\n"
        with pytest.raises(PipelineError) as busy:
            load_model(folder)
    finally:
        holder.kill()
        holder.wait()
    assert str(busy.value) == (
        f"{folder / name}: being written by t2i train m (pid {holder.pid}); retry when it finishes"
    )


def test_a_file_missing_under_this_processs_own_lock_is_missing(tmp_path):
    """`t2i evaluate` holds the lock of the model it loads: its missing file is missing."""
    folder = model_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with model_lock(folder, "t2i evaluate m"), pytest.raises(PipelineError) as missing:
        load_model(folder)
    assert str(missing.value) == (
        f"{folder / 'model.safetensors'}: missing; train the model first (dvc repro)"
    )


def test_a_symlinked_weights_file_is_refused(tmp_path):
    folder = model_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    elsewhere = tmp_path / "elsewhere.safetensors"
    weights.rename(elsewhere)
    weights.symlink_to(elsewhere)
    with pytest.raises(PipelineError) as refused:
        load_model(folder)
    assert str(refused.value).startswith(
        f"{weights}: is a symlink; a model folder holds its own files"
    )
    assert "\n" not in str(refused.value)
    weights.unlink()
    weights.symlink_to(tmp_path / "nowhere")  # dangling: refused the same, not "missing"
    with pytest.raises(PipelineError, match="is a symlink; a model folder holds its own"):
        load_model(folder)


def test_a_fifo_or_an_oversized_weights_file_is_refused_without_reading_it(tmp_path):
    folder = model_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.unlink()
    os.mkfifo(weights)  # no writer: opening it to read would wait forever
    with pytest.raises(PipelineError) as refused:
        load_model(folder)
    assert str(refused.value) == (
        f"{weights}: not a regular file; train the model again (dvc repro)"
    )
    weights.unlink()
    with open(weights, "wb") as handle:  # sparse: 20 GiB + 1 byte that take no disk
        handle.truncate(checkpoint.MAX_WEIGHTS_BYTES + 1)
    with pytest.raises(PipelineError) as refused:
        load_model(folder)
    assert str(refused.value) == (
        f"{weights}: 21,474,836,481 bytes, over the 21,474,836,480 a weights file may hold; "
        "train the model again (dvc repro)"
    )


def test_a_dtype_torch_does_not_read_is_one_line(tmp_path):
    """Every name and shape right, but fc4.bias in F8_E8M0, a dtype the safetensors format
    knows and safetensors.torch's load from bytes does not map (a KeyError inside it): one
    line. Nothing this pipeline writes holds it; its weights are float32."""
    folder = model_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["fc4.bias"] = torch.zeros(784, dtype=torch.uint8)  # 1 byte each, as F8_E8M0
    data = save(tensors)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["fc4.bias"]["dtype"] = "F8_E8M0"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    weights.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + size :])
    with pytest.raises(PipelineError) as refused:
        load_model(folder)
    assert str(refused.value) == (
        f"{weights}: not a readable safetensors file (unsupported dtype 'F8_E8M0'); "
        "train the model again (dvc repro)"
    )
