"""One training step of the state-feedback hybrid: fused recurrence vs plain per-day loop.

Run from the repository root::

    python benchmarks/training_step.py                      # 64 and 512 cells × 365 days
    python benchmarks/training_step.py --cells 64 --repeats 3   # quick look

A step is the forward pass of :class:`h2mv_hybrid.model.networks.HybridH2MV` (the
paper's configuration: states fed back to the LSTM daily, LSTM hidden 100, static
hidden 150, code 12), a loss on ET, runoff, TWS and SWE, and the backward pass,
float32 on the CPU. ``loop`` is the plain per-day implementation (one small tensor op per
equation, autograd records every one); ``fused`` is :class:`FeedbackScan`. Both models
hold the same weights. The two are timed alternately within one process, so that a
noisy machine slows both alike; the table gives the median of the repeats and the ratio
of the medians. The gradients of the two are compared once, as a guard.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def build(n_cells: int, n_days: int, backend: str, seed: int = 0):
    """A model with the paper's sizes and a batch of synthetic sites."""
    import torch

    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    f = site_forcing(n_cells, n_days, seed=seed)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    static = torch.randn(n_cells, 12, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = HybridH2MV(12, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * 12, [1.0] * 12,
                       HybridSettings(static_hidden=150, code_size=12, lstm_hidden=100,
                                      state_feedback=True, feedback_backend=backend))
    return model, forcing, static


def step(model, forcing, static) -> None:
    """Forward, loss, backward."""
    model.zero_grad(set_to_none=True)
    out = model(forcing, static)
    d = out.daily
    loss = d["ET"].mean() + d["q_total"].mean() + d["tws"].mean() + d["swe"].mean()
    loss.backward()


def compare(n_cells: int, n_days: int, repeats: int) -> dict:
    """Alternate loop and fused steps; medians and their ratio."""
    import torch

    runs = {b: build(n_cells, n_days, b) for b in ("loop", "fused")}
    for model, forcing, static in runs.values():
        step(model, forcing, static)  # warm-up: numba compilation / cache load
    grads = {b: [p.grad.clone() for p in runs[b][0].parameters()] for b in runs}
    worst = max(float((a - b).abs().max() / (b.abs().max() + 1e-12))
                for a, b in zip(grads["fused"], grads["loop"], strict=True))
    times: dict[str, list[float]] = {b: [] for b in runs}
    for _ in range(repeats):
        for b, (model, forcing, static) in runs.items():
            t0 = time.perf_counter()
            step(model, forcing, static)
            times[b].append(time.perf_counter() - t0)
    med = {b: statistics.median(v) for b, v in times.items()}
    return {"cells": n_cells, "days": n_days, "loop_s": med["loop"], "fused_s": med["fused"],
            "speedup": med["loop"] / med["fused"], "grad_rel_diff": worst,
            "threads": torch.get_num_threads()}


def main() -> None:
    """Print one row per size, and a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for n in args.cells:
        r = compare(n, args.days, args.repeats)
        rows.append(r)
        print(f"  {n} cells × {args.days} days: loop {r['loop_s']:.3f} s, fused "
              f"{r['fused_s']:.3f} s, {r['speedup']:.2f}× (gradients agree to "
              f"{r['grad_rel_diff']:.1e} relative)", flush=True)
    print(f"\none training step (forward + backward), state feedback, LSTM hidden 100, float32, "
          f"{rows[0]['threads']} threads, median of {args.repeats}")
    print("| cells × days | per-day loop s | fused s | speed-up |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cells']} × {r['days']} | {r['loop_s']:.3f} | {r['fused_s']:.3f} | "
              f"{r['speedup']:.2f}× |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
