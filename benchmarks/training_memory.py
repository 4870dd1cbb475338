"""Peak memory of one state-feedback training step, with and without time chunking.

Gradient checkpointing over time chunks, or truncated back-propagation, against neither.

Run from the repository root::

    python benchmarks/training_memory.py                       # 512 cells × 3650 days
    python benchmarks/training_memory.py --cells 64 --days 730 # quick look
    python benchmarks/training_memory.py --backends fused      # the fused recurrence only

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


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(cells: int, days: int, chunk: int | None, mode: str, backend: str) -> dict:
    """One forward + backward in this process."""
    import torch

    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    torch.manual_seed(0)
    f = site_forcing(cells, days, seed=0)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    static = torch.randn(cells, 12)
    warm = HybridH2MV(12, [100, 2, 280], [50, 5, 10], [0] * 12, [1] * 12,
                      HybridSettings(lstm_hidden=4, feedback_backend=backend))
    warm(forcing[:2, :10], static[:2]).daily["ET"].sum().backward()  # numba: compile/load
    model = HybridH2MV(12, [100, 2, 280], [50, 5, 10], [0] * 12, [1] * 12,
                       HybridSettings(lstm_hidden=100, state_feedback=True, time_chunk=chunk,
                                      chunk_mode=mode, feedback_backend=backend))
    base = _rss()
    t0 = time.perf_counter()
    out = model(forcing, static)
    loss = out.daily["ET"].mean() + out.daily["q_total"].mean() + out.daily["tws"].mean()
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"chunk": chunk, "mode": mode, "backend": backend, "seconds": seconds,
            "peak_mib": peak / 2**20}


def main() -> None:
    """Run each mode in a child process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=512)
    parser.add_argument("--days", type=int, default=3650)
    parser.add_argument("--chunk", type=int, default=365)
    parser.add_argument("--backends", nargs="+", default=["fused", "loop"],
                        choices=["fused", "loop"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        chunk = None if args.child[0] == "none" else int(args.child[0])
        print(json.dumps(child(args.cells, args.days, chunk, args.child[1], args.child[2])))
        return
    rows = []
    for backend in args.backends:
        for chunk, mode in (("none", "checkpoint"), (str(args.chunk), "checkpoint"),
                            (str(args.chunk), "truncate")):
            cmd = [sys.executable, __file__, "--cells", str(args.cells), "--days",
                   str(args.days), "--child", chunk, mode, backend]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(out.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  {backend} chunk={r['chunk']} {r['mode']}: {r['seconds']:.1f} s, "
                  f"peak {r['peak_mib']:.0f} MiB", flush=True)
    print(f"\none training step (forward + backward), state feedback, hidden 100, "
          f"{args.cells} cells × {args.days} days")
    print("| backend | time chunks | mode | seconds | peak MiB |\n|---|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['chunk'] or 'none'} | {r['mode'] if r['chunk'] else '—'} | "
              f"{r['seconds']:.1f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
