"""Where one state-feedback training step spends its time, and the LSTM part's FLOP rate.

Run from the repository root::

    python benchmarks/step_profile.py                  # 64, 512 and 2048 cells × 365 days
    python benchmarks/step_profile.py --cells 512 --threads 2

The step is :mod:`training_step`'s (the paper's sizes: LSTM hidden 100, float32, forward,
loss and backward). Each torch matrix product the fused op calls (the per-day gate
``addmm``, the per-day backward ``mm``, the weight gradients' ``addmm_`` per block of days)
is timed inside the step, and so are the two compiled calls per day (``forward_day``,
``backward_day``: the LSTM cell, head and bucket). The cell and head kernels are timed
again alone on the step's shapes, to split the compiled calls into LSTM and bucket.

The LSTM part is the matrix products plus the cell and head kernels. Its rate is the
products' arithmetic (3 × 2 × C × 4H × W per day, W the padded input row) over its time,
next to a 1024 × 1024 × 1024 float32 product measured in the same process (the "matmul
peak"). Issue 20 asks for ≥ 50 % of that peak at 512 and 2048 cells.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time

from tables import markdown_table
from training_step import build, step

#: The matrix products of the fused op, as the profile names them.
PRODUCTS = ("gate addmm (per day)", "backward mm (per day)", "weight gradients (per block)")


def _timed(acc: collections.Counter, name: str, f):
    def g(*a, **k):
        t0 = time.perf_counter()
        r = f(*a, **k)
        acc[name] += time.perf_counter() - t0
        return r
    return g


def _best(f, repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_peak() -> float:
    """GFLOP/s of a 1024³ float32 product on the current torch threads."""
    import torch

    a, b, out = torch.randn(1024, 1024), torch.randn(1024, 1024), torch.empty(1024, 1024)
    return 2 * 1024**3 / _best(lambda: torch.mm(a, b, out=out), 20) / 1e9


def cell_kernels_per_day(n_cells: int, hidden: int, width: int) -> float:
    """Seconds of one day's cell + head kernel and its adjoint, alone, on random data."""
    import numpy as np
    import torch

    from h2mv_hybrid.model import feedback_kernels as fk
    from h2mv_hybrid.model.cell_kernels import constants
    from process_layers.fused import PARALLEL_CELLS

    par = n_cells >= PARALLEL_CELLS
    fwd = fk._CELL_HEAD_PARALLEL if par else fk._CELL_HEAD_SERIAL
    bwd = fk._CELL_ADJOINT_PARALLEL if par else fk._CELL_ADJOINT_SERIAL
    r = np.random.default_rng(0)
    f32 = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    gates0, cp, x, w_head, b_head = (f32(n_cells, 4 * hidden), f32(n_cells, hidden),
                                     f32(n_cells, width), f32(7, hidden), f32(7))
    gates, cn, raw = gates0.copy(), np.empty_like(cp), np.empty((n_cells, 7), np.float32)
    kc = constants(torch.float32)
    g_x, g_raw, g_c, g_gates, g_h = (f32(n_cells, width), f32(n_cells, 7), f32(n_cells, hidden),
                                     np.empty_like(gates), np.empty_like(cp))

    def day():
        np.copyto(gates, gates0)  # fresh pre-activations each time
        fwd(gates, cp, cn, x, w_head, b_head, raw, kc, True)
        bwd(g_x, g_raw, w_head, gates, cp, cn, g_c, g_gates, g_h, kc, True)

    copy = _best(lambda: np.copyto(gates, gates0), 200)
    return _best(lambda: [day() for _ in range(50)], 5) / 50 - copy


def profile(n_cells: int, n_days: int, repeats: int) -> dict:
    """The step's parts (median seconds over ``repeats``) and the LSTM part's rate."""
    import torch

    from h2mv_hybrid.model import feedback
    from h2mv_hybrid.model.cell_kernels import padded_width

    model, forcing, static = build(n_cells, n_days)
    hidden = model.settings.lstm_hidden
    width = padded_width(hidden + 7)
    runs = []
    originals = {n: getattr(feedback, n) for n in ("forward_day", "backward_day")}
    tensor_addmm_ = torch.Tensor.addmm_
    torch_fns = {n: getattr(torch, n) for n in ("addmm", "mm")}
    try:
        for i in range(repeats + 1):
            acc = collections.Counter()
            for n, f in originals.items():
                setattr(feedback, n, _timed(acc, n, f))
            # torch's own functions, replaced for the step (and restored below)
            torch.addmm = _timed(acc, PRODUCTS[0], torch_fns["addmm"])
            torch.mm = _timed(acc, PRODUCTS[1], torch_fns["mm"])
            torch.Tensor.addmm_ = _timed(acc, PRODUCTS[2], tensor_addmm_)
            t0 = time.perf_counter()
            step(model, forcing, static)
            acc["step"] = time.perf_counter() - t0
            if i:  # the first step warms up (compilation, the tape pool)
                runs.append(acc)
    finally:
        for n, f in originals.items():
            setattr(feedback, n, f)
        for n, f in torch_fns.items():
            setattr(torch, n, f)
        torch.Tensor.addmm_ = tensor_addmm_
    parts = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    cells = cell_kernels_per_day(n_cells, hidden, width) * n_days
    matmuls = sum(parts[k] for k in PRODUCTS)
    flops = 3 * 2 * n_cells * 4 * hidden * width * n_days
    return {"parts": parts, "cell kernels (alone)": cells, "matmuls": matmuls,
            "lstm rate": flops / (matmuls + cells) / 1e9, "matmul rate": flops / matmuls / 1e9}


def main() -> None:
    """Profile each size; print the parts and the rates as markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    peak = matmul_peak()
    rows, part_rows = [], []
    for n in args.cells:
        r = profile(n, args.days, args.repeats)
        p = r["parts"]
        rows.append([n, f"{p['step']:.3f}", f"{r['matmuls']:.3f}",
                     f"{r['cell kernels (alone)']:.3f}", f"{r['matmul rate']:.0f}",
                     f"{r['lstm rate']:.0f}",
                     f"{100 * r['lstm rate'] / peak:.0f} %"])
        part_rows += [[n, k, f"{v:.3f}", f"{100 * v / p['step']:.0f} %"]
                      for k, v in p.items() if k != "step"]
    print(f"\n{args.threads} thread(s), {args.days} days, matmul peak (1024³ float32) "
          f"{peak:.0f} GFLOP/s, load {os.getloadavg()[0]:.1f}")
    print(markdown_table(["cells", "step s", "matrix products s", "cell kernels s",
                          "products GFLOP/s", "LSTM part GFLOP/s", "of peak"], rows))
    print()
    print(markdown_table(["cells", "part", "s", "of the step"], part_rows, numeric_from=2))


if __name__ == "__main__":
    main()
