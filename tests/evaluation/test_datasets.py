"""Data sets: block splits with a buffer, stratified sampling of labelled pixels, specs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import datasets


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    block=st.integers(1, 20),
    seed=st.integers(0, 2**31 - 1),
    buffer=st.integers(1, 3),
)
def test_block_split_never_puts_neighbours_on_both_sides(h, w, block, seed, buffer):
    split = datasets.block_split((h, w), block, seed, buffer=buffer)
    assert split.shape == (h, w)
    assert set(np.unique(split).tolist()) <= {-1, 0, 1}
    train = split == datasets.SPLIT_TRAIN
    test = split == datasets.SPLIT_TEST
    # Every test pixel's (2*buffer+1)^2 neighbourhood, the 8-neighbours included, has no train.
    pad = np.pad(train, buffer)
    for dr in range(-buffer, buffer + 1):
        for dc in range(-buffer, buffer + 1):
            shifted = pad[buffer + dr : buffer + dr + h, buffer + dc : buffer + dc + w]
            assert not (test & shifted).any()
    # Test is whole blocks; a block's side depends only on its position, not on the shape.
    big = datasets.block_split((h + 17, w + 5), block, seed, buffer=buffer)
    assert np.array_equal(big[:h, :w] == datasets.SPLIT_TEST, test)


def test_block_split_is_blockwise_seeded_and_balanced():
    a = datasets.block_split((160, 160), 16, 3)
    assert np.array_equal(a, datasets.block_split((160, 160), 16, 3))
    assert not np.array_equal(a, datasets.block_split((160, 160), 16, 4))
    test_blocks = (a == datasets.SPLIT_TEST).reshape(10, 16, 10, 16).any(axis=(1, 3))
    assert 0.3 < test_blocks.mean() < 0.7
    # Buffer pixels lie only at block edges next to a test block.
    no_buffer = datasets.block_split((160, 160), 16, 3, buffer=0)
    assert np.array_equal(no_buffer == datasets.SPLIT_TEST, a == datasets.SPLIT_TEST)
    assert ((a == datasets.SPLIT_BUFFER) == ((no_buffer == 0) & (a != 0))).all()


def test_sample_labelled_pixels_filters_classes_and_caps():
    label_map = np.zeros((40, 40), np.int64)
    label_map[:, :20] = 1  # 800 px
    label_map[:, 20:] = 2  # 800 px
    label_map[0, :30] = 3  # 30 px: below 50, dropped
    split = datasets.block_split((40, 40), 5, 0)
    index, labels, is_test = datasets.sample_labelled_pixels(
        label_map, split, classes=[1, 2, 3], max_per_class=100, max_test=60
    )
    assert set(labels.tolist()) == {1, 2}
    flat_split = split.reshape(-1)[index]
    assert (flat_split[is_test] == datasets.SPLIT_TEST).all()
    assert (flat_split[~is_test] == datasets.SPLIT_TRAIN).all()
    assert np.array_equal(label_map.reshape(-1)[index], labels)
    for c in (1, 2):
        assert np.sum(~is_test & (labels == c)) == 100
        assert np.sum(is_test & (labels == c)) == 30
    assert len(set(index.tolist())) == len(index)


def test_load_dataset_rejects_bad_specs():
    for spec in ("foo", "sim:abc", "points:only_one.parquet", "eolearn:x"):
        with pytest.raises(ValueError, match="dataset"):
            datasets.load_dataset(spec)
