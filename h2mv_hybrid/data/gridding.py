"""Scatter values of a set of cells onto a store's spatial layout, lazily (dask)."""

from __future__ import annotations

import dask.array
import numpy as np


def scatter(values: np.ndarray, index: np.ndarray, shape: tuple[int, ...],
            tile: tuple[int, ...]) -> dask.array.Array:
    """Place [cells, …] values at flat spatial positions ``index`` of a layout ``shape``.

    Returns a dask array [*shape, …] (NaN where no cell is given), one block per spatial
    tile of ``tile`` cells per dim, so that the padded array never exists whole in memory
    and a zarr write streams block by block. Leading spatial dims, trailing steps: a
    transpose (lazy) puts the time axis first.
    """
    values = np.asarray(values, np.float32)
    tail = values.shape[1:]
    position = np.full(int(np.prod(shape)), -1, np.int64)
    position[np.asarray(index)] = np.arange(len(index))
    position = position.reshape(shape)
    carrier = dask.array.zeros(shape, chunks=tile, dtype=np.int8)

    def block(_: np.ndarray, block_info=None) -> np.ndarray:
        spatial = block_info[None]["array-location"][: len(shape)]
        where = position[tuple(slice(a, b) for a, b in spatial)]
        out = np.full((*where.shape, *tail), np.nan, np.float32)
        found = where >= 0
        out[found] = values[where[found]]
        return out

    return carrier.map_blocks(
        block, dtype=np.float32, new_axis=list(range(len(shape), len(shape) + len(tail))),
        chunks=(*carrier.chunks, *((n,) for n in tail)),
        meta=np.empty((0,) * (len(shape) + len(tail)), np.float32),
    )
