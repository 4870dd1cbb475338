"""A small folder in the layout of shared/data/camels-caravan-41, written by the tests.

Basin series are synthetic (seasonal temperature, wet and dry days, a linear-reservoir
streamflow with gaps); the attribute tables have the CAMELS v2.0 columns the importer
reads, so the tests never need the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from h2mv_hybrid.importers.camels import FEATURES

#: columns of camels_hydro (signatures) that the importer keeps for evaluation only
HYDRO = ("q_mean", "runoff_ratio", "baseflow_index")


def write_camels_folder(path: Path, n_basins: int = 6, start: str = "1981-01-01",
                        end: str = "1984-12-31", seed: int = 0) -> list[str]:
    """Write ``n_basins`` basins (one per 4° block) and return their gauge ids."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    (path / "attributes").mkdir(exist_ok=True)
    days = pd.date_range(start, end, freq="D")
    ids = [f"{1000000 + 37 * i:08d}" for i in range(n_basins)]
    lat = 31.0 + 5.0 * (np.arange(n_basins) % 4)
    lon = -121.0 + 9.0 * np.arange(n_basins)
    doy = days.day_of_year.to_numpy()
    for i, b in enumerate(ids):
        t = 10.0 - 0.4 * (lat[i] - 30) - 12.0 * np.cos(2 * np.pi * (doy - 15) / 365) \
            + rng.normal(0, 2, len(days))
        wet = rng.random(len(days)) < 0.35
        p = np.where(wet, rng.gamma(0.8, 8.0, len(days)), 0.0).round(2)
        q = np.zeros(len(days))
        s = 50.0
        for d in range(len(days)):  # a linear reservoir: q = k S
            s += 0.4 * p[d]
            q[d] = 0.03 * s
            s -= q[d]
        q = q.round(3)
        q[rng.random(len(days)) < 0.05] = np.nan
        pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "P_mm": p, "T_degC": t.round(2),
                      "PET_era5land_mm": np.full(len(days), 12.0), "Q_mm": q}
                     ).to_csv(path / f"{b}.csv.gz", index=False)
    pd.DataFrame({"gauge_id": ids, "gauge_name": [f"basin {i}" for i in range(n_basins)],
                  "gauge_lat": lat, "gauge_lon": lon}).to_csv(path / "basins.csv", index=False)
    for group, cols in FEATURES.items():
        table = pd.DataFrame({c: rng.uniform(0.1, 1.0, n_basins) for c in cols})
        table.insert(0, "gauge_id", ids)
        table.to_csv(path / "attributes" / f"camels_{group}.txt", sep=";", index=False)
    hydro = pd.DataFrame({c: rng.uniform(0.1, 1.0, n_basins) for c in HYDRO})
    hydro.insert(0, "gauge_id", ids)
    hydro.to_csv(path / "attributes" / "camels_hydro.txt", sep=";", index=False)
    return ids
