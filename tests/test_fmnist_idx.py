import gzip
import struct

import numpy as np
import pytest

from pipeline.data.fmnist import LABELS, label_index, load_split, parse_idx
from pipeline.errors import PipelineError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trips_images_and_labels():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images), "x"), images)
    labels = np.array([9, 0, 7], dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels), "y"), labels)


def test_truncated_idx_names_the_file_and_the_missing_bytes():
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-10]
    with pytest.raises(PipelineError, match=r"some/file: IDX file truncated.*1568.*1558"):
        parse_idx(data, "some/file")


def test_truncated_header_and_bad_magic_are_refused():
    with pytest.raises(PipelineError, match="truncated IDX header"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0]), "f")
    with pytest.raises(PipelineError, match="not an IDX file"):
        parse_idx(gzip.compress(b"hello"), "f")
    with pytest.raises(PipelineError, match="element type 0x0d"):
        parse_idx(bytes([0, 0, 0x0D, 1, 0, 0, 0, 0]), "f")


def test_trailing_bytes_are_refused():
    with pytest.raises(PipelineError, match="trailing bytes"):
        parse_idx(idx_bytes(np.zeros(4, np.uint8)) + b"\x00", "f")


def test_load_split_reports_missing_file_and_count_mismatch(tmp_path):
    with pytest.raises(PipelineError, match="run the download stage"):
        load_split(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(PipelineError, match="3 images but 2 labels"):
        load_split(tmp_path, "test")


@pytest.mark.parametrize(
    ("word", "index"),
    [("sneaker", 7), ("boot", 9), ("top", 0), ("handbag", 8), ("Ankle boot", 9), ("3", 3)],
)
def test_paper_label_words_map_to_classes(word, index):
    assert label_index(word) == index
    assert LABELS[index]


def test_unknown_label_lists_valid_ones():
    with pytest.raises(PipelineError, match="unknown Fashion-MNIST label 'hat'.*sneaker"):
        label_index("hat")
