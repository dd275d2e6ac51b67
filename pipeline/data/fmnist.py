"""Fashion-MNIST (Xiao et al. 2017; paper §2.1): labels, IDX parsing, loading.

What every stage that trains or evaluates on Fashion-MNIST reads. The raw folder holds the
four IDX files *decompressed*; pipeline/data/fmnist_download.py puts them there (kept apart,
so that an edit of the download code, or of the HTTP client it uses, reruns only the
download stage).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Table A of the paper.
LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# The short words the paper uses in §3.1.2 ('sneaker', 'boot', 'top', 'handbag'), and others.
LABEL_ALIASES = {
    "t-shirt": 0,
    "tshirt": 0,
    "top": 0,
    "t-shirt/top": 0,
    "trouser": 1,
    "trousers": 1,
    "pullover": 2,
    "dress": 3,
    "coat": 4,
    "sandal": 5,
    "shirt": 6,
    "sneaker": 7,
    "bag": 8,
    "handbag": 8,
    "boot": 9,
    "ankle boot": 9,
    "ankle-boot": 9,
}

_IDX_DTYPES = {0x08: np.uint8}


def label_index(name: str) -> int:
    """Map 'sneaker', 'Ankle boot' or '7' to a class index."""
    key = name.strip().lower()
    if key.isascii() and key.isdigit() and int(key) < len(LABELS):  # not '²'
        return int(key)
    if key in LABEL_ALIASES:
        return LABEL_ALIASES[key]
    for index, label in enumerate(LABELS):
        if key == label.lower():
            return index
    valid = ", ".join(sorted(LABEL_ALIASES))
    raise PipelineError(f"unknown Fashion-MNIST label {name!r}; expected 0-9 or one of: {valid}")


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format) of unsigned bytes into an array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise PipelineError(f"{source}: not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _IDX_DTYPES:
        raise PipelineError(f"{source}: IDX element type 0x{dtype_code:02x} unsupported")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise PipelineError(f"{source}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) if shape else 0
    found = len(data) - header_len
    if found != expected:
        state = "truncated" if found < expected else "has trailing bytes"
        raise PipelineError(
            f"{source}: IDX file {state}: shape {shape} needs {expected} data bytes, found {found}"
        )
    return np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code], offset=header_len).reshape(shape)


def load_split(
    raw_dir: Path, split: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 28, 28], labels int64 [N]) of 'train' or 'test'."""
    image_name, label_name = SPLIT_FILES[split]
    arrays = []
    for name in (image_name, label_name):
        path = raw_dir / name
        if not path.is_file():
            raise PipelineError(f"{path}: missing; run the download stage (t2i download fmnist)")
        arrays.append(parse_idx(path.read_bytes(), str(path)))
    images, labels = arrays
    if len(images) != len(labels):
        raise PipelineError(f"{raw_dir}: {split} has {len(images)} images but {len(labels)} labels")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels.astype(np.int64)


def load_tensors(
    raw_dir: Path, split: str, limit: int | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, 784) in [0, 1], labels int64 (N,)) on ``device``.

    §2.1: images are flattened and rescaled to [0, 1].
    """
    images, labels = load_split(raw_dir, split, limit)
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x.to(device), torch.from_numpy(labels).to(device)
