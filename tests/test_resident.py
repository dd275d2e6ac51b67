"""Decoded images resident on the device (pipeline/data/resident.py): the same pairs as the
streamed loader, in a seeded permutation."""

import pytest
import torch

from pipeline.data.pairs import ShardCaptionPairs
from pipeline.data.resident import ResidentCaptionPairs
from pipeline.errors import PipelineError

from .test_pairs import caption_of, make_pairs_data


def test_resident_images_give_the_streamed_pairs_and_a_seeded_permutation(tmp_path):
    shards, emb, n = make_pairs_data(tmp_path)
    streamed = ShardCaptionPairs(shards, emb, pairs=n, batch_size=4, workers=0)
    resident = ResidentCaptionPairs(shards, emb, images=6, batch_size=4)
    assert len(resident) == n and resident.text_dim == 8 and not resident.gpu_decoded
    assert resident.images.dtype == torch.uint8 and resident.images.shape == (6, 3, 32, 32)
    for (xs, cs), (xr, cr) in zip(streamed.batches(), resident.batches(), strict=True):
        assert torch.equal(xs, xr) and torch.equal(cs, cr)  # shard order: the same batches

    def order(seed):
        return [
            caption_of(c)
            for _, cs in resident.batches(torch.Generator().manual_seed(seed))
            for c in cs
        ]

    assert sorted(order(1)) == list(range(n)) and order(1) == order(1) != order(2)


def test_resident_images_refuse_a_count_that_disagrees_with_the_index(tmp_path):
    shards, emb, _ = make_pairs_data(tmp_path)
    with pytest.raises(PipelineError, match="6 images in the shards, but the index says 7"):
        ResidentCaptionPairs(shards, emb, images=7, batch_size=4)
