"""Spatial-block folds: disjoint, covering, contiguous blocks, a test fold never trained on."""

import numpy as np
import pytest

from h2mv_hybrid.data.folds import NOT_MODELLED, TEST_FOLD, assign_folds, block_ids, member_split


def grid(res=2.0):
    lat = np.arange(-60 + res / 2, 80, res)
    lon = np.arange(-180 + res / 2, 180, res)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    mask = (np.cos(np.radians(la * 3)) + np.sin(np.radians(lo * 2))) > -0.3
    return la, lo, mask


def test_folds_are_deterministic_and_seeded():
    la, lo, mask = grid()
    a = assign_folds(la, lo, mask, n_folds=10, block_deg=10, seed=3)
    b = assign_folds(la, lo, mask, n_folds=10, block_deg=10, seed=3)
    c = assign_folds(la, lo, mask, n_folds=10, block_deg=10, seed=4)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_folds_cover_partition_and_balance():
    la, lo, mask = grid()
    folds = assign_folds(la, lo, mask, n_folds=10, block_deg=10, seed=0)
    assert set(np.unique(folds[mask])) == {TEST_FOLD, *range(10)}
    assert (folds[~mask] == NOT_MODELLED).all()
    sizes = np.array([(folds == k).sum() for k in [TEST_FOLD, *range(10)]])
    assert sizes.sum() == mask.sum()
    assert sizes.max() / sizes.min() < 1.6  # balanced by cells, up to one block


def test_each_block_lies_in_one_fold():
    la, lo, mask = grid()
    folds = assign_folds(la, lo, mask, n_folds=5, block_deg=10, seed=1)
    blocks = block_ids(la, lo, 10)
    for b in np.unique(blocks[mask]):
        assert len(np.unique(folds[mask & (blocks == b)])) == 1


@pytest.mark.parametrize("member", range(10))
def test_member_split_is_disjoint_and_never_trains_on_test(member):
    la, lo, mask = grid()
    folds = assign_folds(la, lo, mask, n_folds=10, block_deg=10, seed=0)
    s = member_split(folds, member)
    assert not (s.train & s.val).any() and not (s.train & s.test).any()
    assert not (s.val & s.test).any()
    assert ((s.train | s.val | s.test) == mask).all()
    assert (folds[s.test] == TEST_FOLD).all() and (folds[s.val] == member).all()


def test_bad_arguments():
    la, lo, mask = grid()
    with pytest.raises(ValueError, match="at least 11 blocks"):
        assign_folds(la, lo, mask, n_folds=10, block_deg=90)
    with pytest.raises(ValueError, match="n_folds: expected at least 2"):
        assign_folds(la, lo, mask, n_folds=1)
    folds = assign_folds(la, lo, mask, n_folds=4, block_deg=10)
    with pytest.raises(ValueError, match="member: expected 0 … 3"):
        member_split(folds, 4)
