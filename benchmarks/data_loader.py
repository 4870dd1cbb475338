"""Cells per second served by the DataModule on a 1° twin store, against a training step.

Run from the repository root::

    python benchmarks/data_loader.py                          # writes a 1° 2001-2005 twin first
    python benchmarks/data_loader.py --store twin1deg.zarr    # reuse a store

Reports the loader's throughput (cells of whole series per second, batch of 64) and, in
the same run, the time of a lower bound of a training step on the same batches: the
cheapest hybrid configuration (a whole-sequence LSTM of hidden size 100 emitting α, then
the fused process layer), forward + backward. The loader is not the bottleneck when its
time per batch is below the step's (and with ``num_workers`` it overlaps the step).
Peak resident memory is compared with the size of the store on disk, to show the store
is served lazily rather than loaded whole. The twin is written by a subprocess
(``h2mv synth``) whose own peak memory is reported too.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from h2mv_hybrid.data.datamodule import H2MVDataModule
from process_layers import h2mv
from process_layers.parameters import ALPHA_NAMES


def main() -> None:
    """Build or open the store, time the loader and the step proxy, print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, help="an existing store (else a twin is written)")
    parser.add_argument("--res", type=float, default=1.0)
    parser.add_argument("--years", default="2001-2010")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    store = args.store
    if store is None:
        store = Path(tempfile.mkdtemp(prefix="h2mv-bench-")) / "twin.zarr"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "h2mv_hybrid.cli", "synth", "--out", str(store),
                        "--res", str(args.res), "--years", args.years], check=True)
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"generator: {time.perf_counter() - t0:.1f} s, peak RSS {child:.0f} MiB")
    size = subprocess.run(["du", "-sm", str(store)], capture_output=True, text=True)
    size_mib = float(size.stdout.split()[0]) if size.returncode == 0 else float("nan")

    dm = H2MVDataModule(str(store), batch_size=args.batch_size)
    t0 = time.perf_counter()
    dm.setup("fit")
    stats = dm.stats
    print(f"setup (store check, folds) + training statistics: {time.perf_counter() - t0:.1f} s; "
          f"{int(dm.cells('train').sum())} training cells; forcing mean {stats.forcing_mean}")
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    loader = iter(dm.train_dataloader())
    torch.manual_seed(0)
    n_features = len(stats.features)
    lstm = torch.nn.LSTM(3 + n_features, 100, batch_first=True)
    head = torch.nn.Linear(100, len(ALPHA_NAMES))
    f_mean, f_std = torch.tensor(stats.forcing_mean), torch.tensor(stats.forcing_std)
    s_mean, s_std = torch.tensor(stats.static_mean), torch.tensor(stats.static_std)
    load_s, step_s, cells = 0.0, 0.0, 0
    for _ in range(args.batches):
        t0 = time.perf_counter()
        batch = next(loader)
        load_s += time.perf_counter() - t0
        n, days, _ = batch["forcing"].shape
        cells += n
        t0 = time.perf_counter()
        x = torch.cat([(batch["forcing"] - f_mean) / f_std,
                       ((batch["static"] - s_mean) / s_std)[:, None].expand(n, days, -1)], -1)
        raw = head(lstm(x)[0])
        alpha = dict(zip(ALPHA_NAMES, torch.sigmoid(raw).unbind(-1), strict=True))
        forcing = dict(zip(("rn", "prec", "tair"), batch["forcing"].unbind(-1), strict=True))
        static = {"sm_max": torch.full((n,), 150.0, requires_grad=True)}
        beta = {"snow": torch.tensor(0.9), "baseflow": torch.tensor(0.02)}
        f = h2mv.simulate(forcing, alpha, static, beta)
        (f.ET.mean() + f.q_total.mean() + f.tws.mean()).backward()
        step_s += time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nloader: {cells / load_s:.0f} cells/s ({load_s / args.batches * 1e3:.0f} ms per batch "
          f"of {args.batch_size} cells × {days} days)")
    print(f"step lower bound (LSTM 100 → α → fused bucket, forward + backward): "
          f"{step_s / args.batches * 1e3:.0f} ms per batch")
    print(f"loader time / step time: {load_s / step_s:.2f}")
    print(f"peak RSS {peak:.0f} MiB (after setup {base_rss:.0f} MiB); store on disk "
          f"{size_mib:.0f} MiB")


if __name__ == "__main__":
    main()
