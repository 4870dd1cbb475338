"""Wall time of a single-basin temporal fit of the hybrid until its validation optimum.

Run from the repository root::

    python benchmarks/single_basin_fit.py                    # CAMELS basin 01022500 from ../shared
    python benchmarks/single_basin_fit.py --basin 03237500 --config experiments/camels_temporal.yaml

Imports one basin of the shared CAMELS folder (``../shared/data/camels-caravan-41``) into a
temporary store, fits ``experiments/camels_temporal.yaml`` on it (training windows, NSE*,
routing, signatures; early stopping on the validation loss) and reports the wall time of
the whole fit, the epoch and the wall time at which the best validation loss was reached,
and that epoch's validation NSE, KGE and KGE′ of daily runoff. The machine's load average
is printed beside, since these machines are shared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from h2mv_hybrid import cli
from h2mv_hybrid.importers.camels import import_camels

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Import, fit, read the log, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(ROOT.parent / "shared/data/camels-caravan-41"))
    parser.add_argument("--basin", default="01022500")
    parser.add_argument("--config", default=str(ROOT / "experiments/camels_temporal.yaml"))
    parser.add_argument("--max_epochs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = import_camels(args.source, str(Path(tmp) / "basin.zarr"), basins=[args.basin])
        load = os.getloadavg()
        t0 = time.perf_counter()
        cli.main(["fit", "--config", args.config, "--data.store", store,
                  "--data.batch_size", "1", "--trainer.max_epochs", str(args.max_epochs),
                  "--trainer.enable_progress_bar", "false",
                  "--trainer.default_root_dir", tmp,
                  "--trainer.logger.init_args.save_dir", tmp])
        wall = time.perf_counter() - t0
        metrics = pd.read_csv(next(Path(tmp).rglob("metrics.csv")))
    val = metrics.dropna(subset=["val_loss"]).reset_index(drop=True)
    best = val.loc[val["val_loss"].idxmin()]
    epochs = int(val["epoch"].max()) + 1
    print(f"\nbasin {args.basin}: fit {wall:.0f} s, {epochs} epochs; best validation loss at "
          f"epoch {int(best['epoch'])} (≈ {wall * (best['epoch'] + 1) / epochs:.0f} s): "
          f"NSE {best['val_q_nse']:.2f}, KGE {best['val_q_kge']:.2f}, "
          f"KGE′ {best['val_q_kge_prime']:.2f}; load average before {load[0]:.1f}, after "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
