"""Spatial-block K-fold cross-validation with a fixed test fold (paper §2.3.1, Fig. B1).

Cells are grouped into blocks of N × N degrees (Roberts et al. 2017: blocks larger than
the range of spatial autocorrelation keep validation cells from being near-copies of
training cells). Blocks, not cells, are assigned to K validation folds and one test fold,
in a random order fixed by the seed and balanced by the number of modelled cells. Member
k of the ensemble validates on fold k, is tested on the test fold, and trains on the rest.

A temporal split (:func:`temporal_fold_map`) has no folds: every modelled cell trains in
the training period and is validated and tested in later periods (fold
:data:`EVERY_STAGE`); a single cell (one basin) is enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

TEST_FOLD = -1
#: A temporal split's cells: trained on in the training period, validated and tested later.
EVERY_STAGE = -2
NOT_MODELLED = -9


def block_ids(lat: np.ndarray, lon: np.ndarray, block_deg: float) -> np.ndarray:
    """Integer id of the N° × N° block of each (lat, lon) (same shape as the inputs)."""
    if block_deg <= 0:
        raise ValueError(f"block_deg: expected a positive block size in degrees, found {block_deg}")
    rows = np.floor((np.asarray(lat) + 90.0) / block_deg).astype(np.int64)
    cols = np.floor((np.mod(np.asarray(lon) + 180.0, 360.0)) / block_deg).astype(np.int64)
    return rows * 100_000 + cols


def assign_folds(
    lat: np.ndarray,
    lon: np.ndarray,
    mask: np.ndarray,
    *,
    n_folds: int = 10,
    block_deg: float = 10.0,
    seed: int = 0,
) -> np.ndarray:
    """Fold of every cell: 0 … K−1 (validation folds), −1 (test), −9 (not modelled).

    Args:
        lat: latitude of every cell (degrees north), shaped like ``mask``.
        lon: longitude of every cell (degrees east), shaped like ``mask``.
        mask: cells to model (bool).
        n_folds: K, the number of validation folds (ensemble members).
        block_deg: block size in degrees.
        seed: seed of the block order (a local generator; no global random state).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds: expected at least 2 folds, found {n_folds}")
    mask = np.asarray(mask, dtype=bool)
    unplaced = mask & ~(np.isfinite(lat) & np.isfinite(lon))
    if unplaced.any():
        raise ValueError(f"lat, lon: expected coordinates of every modelled cell for spatial "
                         f"folds (split spatial or both), found none for {int(unplaced.sum())} "
                         f"cells; give them, or use split temporal")
    blocks = block_ids(lat, lon, block_deg)
    ids, counts = np.unique(blocks[mask], return_counts=True)
    n_groups = n_folds + 1
    if len(ids) < n_groups:
        raise ValueError(
            f"block_deg: expected at least {n_groups} blocks with modelled cells for "
            f"{n_folds} folds + 1 test fold, found {len(ids)} blocks of {block_deg}°; use "
            f"smaller blocks or fewer folds"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    # Greedy balance: the next block goes to the group holding the fewest cells so far;
    # ties go to the lowest group, and group 0 is the test fold.
    load = np.zeros(n_groups, dtype=np.int64)
    group_of_block = {}
    for i in order:
        g = int(np.argmin(load))
        group_of_block[ids[i]] = g
        load[g] += counts[i]
    lookup = np.vectorize(lambda b: group_of_block.get(b, -1), otypes=[np.int64])
    groups = lookup(blocks)
    folds = np.where(groups == 0, TEST_FOLD, groups - 1)
    return np.where(mask, folds, NOT_MODELLED).astype(np.int16)


def fold_map(
    ds: xr.Dataset, *, n_folds: int = 10, block_deg: float = 10.0, seed: int = 0
) -> xr.DataArray:
    """The fold of every cell of a store as a DataArray (grid or point layout), for plotting."""
    mask = ds["mask"].values.astype(bool)
    if "cell" in ds["mask"].dims:
        lat, lon = ds["lat"].values, ds["lon"].values
    else:
        lat, lon = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
    folds = assign_folds(lat, lon, mask, n_folds=n_folds, block_deg=block_deg, seed=seed)
    return xr.DataArray(
        folds, dims=ds["mask"].dims, coords=ds["mask"].coords, name="fold",
        attrs={
            "long_name": "cross-validation fold",
            "units": "1",
            "flag_values": [NOT_MODELLED, TEST_FOLD, *range(n_folds)],
            "flag_meanings": "not_modelled test " + " ".join(f"fold_{k}" for k in range(n_folds)),
            "block_deg": block_deg,
            "seed": seed,
        },
    )


def temporal_fold_map(ds: xr.Dataset) -> xr.DataArray:
    """The fold map of a temporal split: :data:`EVERY_STAGE` on every modelled cell."""
    mask = ds["mask"].values.astype(bool)
    folds = np.where(mask, EVERY_STAGE, NOT_MODELLED).astype(np.int16)
    return xr.DataArray(
        folds, dims=ds["mask"].dims, coords=ds["mask"].coords, name="fold",
        attrs={"long_name": "split of each cell (temporal: every cell in every stage)",
               "units": "1", "flag_values": [NOT_MODELLED, EVERY_STAGE],
               "flag_meanings": "not_modelled every_stage"},
    )


@dataclass(frozen=True)
class Split:
    """Boolean cell masks of one ensemble member (same shape as the fold map)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def member_split(folds: np.ndarray, member: int) -> Split:
    """Member k validates on fold k, tests on the test fold and trains on the others.

    A temporal fold map (:func:`temporal_fold_map`) gives every modelled cell to every
    stage, whatever the member.
    """
    every = folds == EVERY_STAGE
    if every.any():
        return Split(train=every, val=every, test=every)
    n_folds = int(folds.max()) + 1
    if not 0 <= member < n_folds:
        raise ValueError(f"member: expected 0 … {n_folds - 1} for {n_folds} folds, found {member}")
    val = folds == member
    test = folds == TEST_FOLD
    train = (folds >= 0) & ~val
    return Split(train=train, val=val, test=test)
