"""Forward + backward throughput and peak memory of ``h2mv.simulate``: fused scan vs per-day loop.

Run from the repository root::

    python benchmarks/process_layer.py                 # 64, 512, 4096 cells × 3650 days
    python benchmarks/process_layer.py --cells 64 --days 365 --repeats 1   # quick look

Each (backend, size) runs in a fresh subprocess, so that its peak resident memory can be
attributed to one forward + backward pass: peak = high-water RSS minus the RSS after the
inputs were built and the kernels warmed up on a tiny case (numba compilation excluded).
Throughput is cell-days per second of one forward + backward (median of the repeats),
float32, gradients w.r.t. all α, SM_max and β, loss on ET, runoff, TWS and SWE as in
training. The ratios compare the two backends measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(backend: str, n_cells: int, n_days: int, repeats: int, device: str) -> dict:
    """One configuration, in this process (called in a child by :func:`main`)."""
    import torch

    from h2mv_hybrid.sites import site_coefficients, site_forcing
    from process_layers import h2mv

    def run(forcing, alpha, static, beta):
        params = [*alpha.values(), static["sm_max"], *beta.values()]
        f = h2mv.simulate(forcing, alpha, static, beta, backend=backend)
        loss = f.ET.mean() + f.q_total.mean() + f.tws.mean() + f.swe.mean()
        torch.autograd.grad(loss, params)
        if device == "cuda":
            torch.cuda.synchronize()

    def inputs(c, t):
        forcing = site_forcing(c, t, seed=0)
        alpha, static, beta = site_coefficients(forcing, seed=0)
        to = lambda d, grad: {k: v.to(device).requires_grad_(grad) for k, v in d.items()}  # noqa: E731
        return to(forcing, False), to(alpha, True), to(static, True), to(beta, True)

    run(*inputs(4, 30))  # warm-up: numba compilation / cache load, allocator
    case = inputs(n_cells, n_days)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _rss_bytes()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(*case)
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    seconds = statistics.median(times)
    return {
        "backend": backend, "cells": n_cells, "days": n_days, "device": device,
        "seconds": seconds, "cell_days_per_s": n_cells * n_days / seconds,
        "peak_mib": peak / 2**20, "threads": torch.get_num_threads(),
    }


def main() -> None:
    """Run every configuration in a child process and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--days", type=int, default=3650)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["loop", "fused"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, cells = args.child.split(":")
        print(json.dumps(measure(backend, int(cells), args.days, args.repeats, args.device)))
        return

    results = []
    for cells in args.cells:
        for backend in args.backends:
            cmd = [sys.executable, __file__, "--child", f"{backend}:{cells}", "--days",
                   str(args.days), "--repeats", str(args.repeats), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                sys.exit(f"benchmark {backend} at {cells} cells failed:\n{out.stderr}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"  {backend:>5} {cells:>5} cells × {args.days} days: {r['seconds']:8.3f} s, "
                  f"{r['cell_days_per_s']:.3g} cell-days/s, peak {r['peak_mib']:.0f} MiB",
                  flush=True)

    print(f"\nforward + backward of h2mv.simulate, float32, {args.device}, {args.days} days")
    print("| cells | loop cell-days/s | fused cell-days/s | speed-up | loop peak MiB "
          "| fused peak MiB | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    by = {(r["backend"], r["cells"]): r for r in results}
    for cells in args.cells:
        lo, fu = by.get(("loop", cells)), by.get(("fused", cells))
        if lo and fu:
            print(f"| {cells} | {lo['cell_days_per_s']:.3g} | {fu['cell_days_per_s']:.3g} | "
                  f"{fu['cell_days_per_s'] / lo['cell_days_per_s']:.1f}× | "
                  f"{lo['peak_mib']:.0f} | {fu['peak_mib']:.0f} | "
                  f"{fu['peak_mib'] / max(lo['peak_mib'], 1e-9):.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
