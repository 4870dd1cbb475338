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
        ``sm_max_r`` (Pearson r across test cells), ``sm_max_bias_mm``, the learned and
        true mean SM_max, learned and true β.
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
        "sm_max_mean_mm": float(learned.mean()),
        "true_sm_max_mean_mm": float(true.mean()),
        **{f"beta_{k}": v for k, v in beta.items()},
        **{f"true_beta_{k}": float(truth.attrs[f"beta_{k}"]) for k in beta},
    }


#: The quickstart's acceptance for SM_max on held-out cells (issue 20): pattern and level.
SM_MAX_GOALS = {"r": 0.7, "bias": 0.2}

#: What each quantity of the table is, printed under it.
MEANINGS = (
    "SM_max: the soil's water capacity (mm), learned per cell by the static network; r "
    "(Pearson, across the test cells) says whether its map has the right pattern, the bias "
    "whether it has the right level.",
    "β_snow: the share of precipitation falling as snow below 0 °C; β_baseflow: the share "
    "of groundwater leaving as baseflow each day. The twin's values are global constants; "
    "a β learned per cell is shown as its median over the test cells.",
)


def recovery_table(result: dict[str, float], checkpoint: str, member: int) -> str:
    """The printed table of :func:`recovery`: quantity, learned, true, metric, goal."""
    r, bias = result["sm_max_r"], result["sm_max_bias_mm"]
    rel = bias / result["true_sm_max_mean_mm"]
    rows = [("SM_max, map", "", "", f"r = {r:.2f}", f"r ≥ {SM_MAX_GOALS['r']}",
             r >= SM_MAX_GOALS["r"]),
            ("SM_max, mean (mm)", f"{result['sm_max_mean_mm']:.0f}",
             f"{result['true_sm_max_mean_mm']:.0f}", f"bias {bias:+.0f} mm ({rel:+.0%})",
             f"within ±{SM_MAX_GOALS['bias']:.0%}", abs(rel) <= SM_MAX_GOALS["bias"])]
    for k in sorted(k[5:] for k in result if k.startswith("beta_")):
        learned, true = result[f"beta_{k}"], result[f"true_beta_{k}"]
        rows.append((f"β_{k}", f"{learned:.3f}", f"{true:.3f}",
                     f"error {(learned - true) / true:+.0%}", "no set goal", None))
    header = ("quantity", "learned", "true", "metric", "goal", "")
    mark = {True: "met", False: "not met", None: ""}
    table = [header] + [(*row[:5], mark[row[5]]) for row in rows]
    widths = [max(len(t[i]) for t in table) for i in range(6)]
    lines = [f"parameter recovery of {checkpoint} (member {member}) on its "
             f"{result['test_cells']} held-out test cells, against the twin's truth:"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip()
              for t in table]
    return "\n".join([*lines, "", *MEANINGS])


def recovery(checkpoint: str, store: str, member: int = 0, n_folds: int = 10,
             block_deg: float = 10.0, fold_seed: int = 0, root: str = ".") -> dict[str, float]:
    """Print the parameter recovery of a checkpoint on a twin (the ``h2mv recovery`` command).

    Args:
        checkpoint: a checkpoint of the hybrid model, or ``best`` / ``last``: the latest
            fit's under ``root``.
        store: the twin store it was trained on.
        member: the CV member (fold) of the checkpoint.
        n_folds: number of CV folds.
        block_deg: block size of the folds, degrees.
        fold_seed: seed of the folds.
        root: where ``best`` and ``last`` are looked for (the fit's
            ``trainer.default_root_dir``).
    """
    if checkpoint in ("best", "last"):
        from h2mv_hybrid.lightning_cli import find_checkpoint

        checkpoint = str(find_checkpoint(checkpoint, root))
    result = parameter_recovery(checkpoint, store, member, n_folds, block_deg, fold_seed)
    print(recovery_table(result, checkpoint, member))
    return result
