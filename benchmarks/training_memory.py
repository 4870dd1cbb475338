"""Peak memory of one training step, with and without time chunking.

Gradient checkpointing over time chunks, or truncated back-propagation, against neither,
and the default (``time_chunk: auto``), for the state-feedback configuration (each
backend) and the decoupled one.

Run from the repository root::

    python benchmarks/training_memory.py                       # 512 cells × 3650 days
    python benchmarks/training_memory.py --cells 64 --days 730 # quick look
    python benchmarks/training_memory.py --backends fused      # the fused recurrence only
    python benchmarks/training_memory.py --configs decoupled   # the decoupled configuration

Each mode runs in a fresh subprocess: peak = high-water RSS minus the RSS once the inputs
exist (float32, LSTM hidden 100, loss on ET, runoff and TWS over the whole period).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from tables import markdown_table


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(cells: int, days: int, chunk: int | str | None, mode: str, backend: str,
          feedback: bool) -> dict:
    """One forward + backward in this process."""
    import torch

    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    torch.manual_seed(0)
    f = site_forcing(cells, days, seed=0)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    static = torch.randn(cells, 12)
    for sf in (True, False):  # numba: compile or load both configurations' kernels
        warm = HybridH2MV(12, [100, 2, 280], [50, 5, 10], [0] * 12, [1] * 12,
                          HybridSettings(lstm_hidden=4, state_feedback=sf,
                                         feedback_backend=backend))
        warm(forcing[:2, :10], static[:2]).daily["ET"].sum().backward()
    model = HybridH2MV(12, [100, 2, 280], [50, 5, 10], [0] * 12, [1] * 12,
                       HybridSettings(lstm_hidden=100, state_feedback=feedback,
                                      time_chunk=chunk, chunk_mode=mode,
                                      feedback_backend=backend))
    base = _rss()
    t0 = time.perf_counter()
    out = model(forcing, static)
    loss = out.daily["ET"].mean() + out.daily["q_total"].mean() + out.daily["tws"].mean()
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"config": "state feedback" if feedback else "decoupled", "chunk": chunk,
            "mode": mode, "backend": backend if feedback else "fused bucket",
            "seconds": seconds, "peak_mib": peak / 2**20}


def main() -> None:
    """Run each mode in a child process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=512)
    parser.add_argument("--days", type=int, default=3650)
    parser.add_argument("--chunk", type=int, default=365)
    parser.add_argument("--backends", nargs="+", default=["fused", "loop"],
                        choices=["fused", "loop"])
    parser.add_argument("--configs", nargs="+", default=["feedback", "decoupled"],
                        choices=["feedback", "decoupled"])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        given = args.child[0]
        chunk = None if given == "none" else given if given == "auto" else int(given)
        print(json.dumps(child(args.cells, args.days, chunk, args.child[1], args.child[2],
                               args.child[3] == "feedback")))
        return
    rows = []
    modes = (("auto", "checkpoint"), ("none", "checkpoint"), (str(args.chunk), "checkpoint"),
             (str(args.chunk), "truncate"))
    runs = [(c, b) for c in args.configs for b in (args.backends if c == "feedback"
                                                    else ["fused"])]
    for config, backend in runs:
        for chunk, mode in modes:
            cmd = [sys.executable, __file__, "--cells", str(args.cells), "--days",
                   str(args.days), "--child", chunk, mode, backend, config]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(out.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  {r['config']}, {r['backend']}, chunk={r['chunk']} {r['mode']}: "
                  f"{r['seconds']:.1f} s, peak {r['peak_mib']:.0f} MiB", flush=True)
    print(f"\none training step (forward + backward), hidden 100, {args.cells} cells × "
          f"{args.days} days, load average {os.getloadavg()[0]:.1f}")
    print(markdown_table(
        ["configuration", "backend", "time chunks", "mode", "seconds", "peak MiB"],
        [[r["config"], r["backend"],
          "auto (default)" if r["chunk"] == "auto" else r["chunk"] or "none",
          r["mode"] if r["chunk"] else "—", f"{r['seconds']:.1f}", f"{r['peak_mib']:.0f}"]
         for r in rows], numeric_from=4))


if __name__ == "__main__":
    main()
