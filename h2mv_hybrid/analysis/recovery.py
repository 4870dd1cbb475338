"""Parameter recovery on a synthetic twin: learned SM_max and β against the stored truth.

This reads the store's ``truth`` group, which training never does: it is an analysis of
a fitted model, possible only on a twin.
"""

from __future__ import annotations

import numpy as np
import torch

from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.store import open_store
from h2mv_hybrid.model.module import H2MVHybrid


def parameter_recovery(checkpoint: str, store: str, member: int = 0, n_folds: int = 10,
                       block_deg: float = 10.0, fold_seed: int = 0) -> dict[str, float]:
    """Compare a checkpoint's SM_max (on the test cells) and β with the twin's truth.

    Args:
        checkpoint: a checkpoint of :class:`H2MVHybrid`.
        store: the twin store the model was trained on.
        member: the CV member (fold) of the checkpoint.
        n_folds: number of CV folds.
        block_deg: block size of the folds, degrees.
        fold_seed: seed of the folds.

    Returns:
        ``sm_max_r`` (Pearson r across test cells), ``sm_max_bias_mm``, learned and true β.
    """
    model = H2MVHybrid.load_from_checkpoint(checkpoint, map_location="cpu")
    model.eval()
    dm = H2MVDataModule(store, n_folds=n_folds, member=member, block_deg=block_deg,
                        fold_seed=fold_seed, check_values=False)
    test = dm.cells("test")
    ds, truth = dm.dataset, open_store(store, group="truth")
    static = torch.as_tensor(ds["static"].values[:, test].T, dtype=torch.float32)
    with torch.no_grad():
        code, code_sm_max = model.model.static((static - model.model.static_mean)
                                               / model.model.static_std)
        # a β learned per cell is reported as its median over the test cells
        beta = {k: float(v.median()) for k, v in model.model.beta(code).items()}
    learned = code_sm_max.numpy()
    true = truth["sm_max"].values[test]
    return {
        "test_cells": int(test.sum()),
        "sm_max_r": float(np.corrcoef(learned, true)[0, 1]),
        "sm_max_bias_mm": float(learned.mean() - true.mean()),
        **{f"beta_{k}": v for k, v in beta.items()},
        **{f"true_beta_{k}": float(truth.attrs[f"beta_{k}"]) for k in beta},
    }


def recovery(checkpoint: str, store: str, member: int = 0, n_folds: int = 10,
             block_deg: float = 10.0, fold_seed: int = 0) -> dict[str, float]:
    """Print the parameter recovery of a checkpoint on a twin (the ``h2mv recovery`` command).

    Args:
        checkpoint: a checkpoint of the hybrid model.
        store: the twin store it was trained on.
        member: the CV member (fold) of the checkpoint.
        n_folds: number of CV folds.
        block_deg: block size of the folds, degrees.
        fold_seed: seed of the folds.
    """
    result = parameter_recovery(checkpoint, store, member, n_folds, block_deg, fold_seed)
    for k, v in result.items():
        print(f"{k:>22}: {v:.4g}" if isinstance(v, float) else f"{k:>22}: {v}")
    return result
