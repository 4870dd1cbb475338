"""Write ``h2mv predict`` results to a zarr store, atomically; what a predict record holds.

Every daily output of the model's ``predict_step`` (for the hybrid: all fluxes and
storages of the bucket, fAPAR, every α, SM_max and β; for the LSTM heads: the forecast
soil moisture) of the predicted cells, on the input store's layout (time, lat, lon or
time, cell), with ``units`` and ``long_name``; cells that were not predicted are NaN.
The store is written under a temporary name and renamed into place, so an interrupted
run leaves no half-written store under the final name.

:func:`record_variables` is the one mapping from a ``predict_step`` record to store
variables (names, shapes, units), shared with the ensemble store
(:mod:`h2mv_hybrid.ensemble.store`).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import xarray as xr
from lightning.pytorch.callbacks import BasePredictionWriter

from h2mv_hybrid import __version__
from h2mv_hybrid.data.gridding import scatter
from h2mv_hybrid.data.store import TILE, write_store
from process_layers import FLUX_METADATA
from process_layers.parameters import BY_NAME

#: (units, long_name, equation) of the daily outputs that are not the bucket's fluxes.
OUTPUT_METADATA = {
    "fapar": ("1", "fraction of absorbed PAR", "A5"),
    "snow_cover": ("1", "snow-covered fraction 1 − exp(−SWE / k)", "snow.snow_covered_fraction"),
    "q_routed": ("mm day-1", "runoff at the outlet (q_total routed)", "routing.route"),
    "routing_store": ("mm", "water in transit to the outlet", "routing.routing_storage"),
    "q_export": ("mm day-1", "groundwater outflow that leaves the basin",
                 "runoff.groundwater_export"),
}


def output_metadata(name: str, prediction: dict) -> tuple[str, str, str]:
    """(units, long_name, equation) of a daily output: the head's own, else the model's."""
    own = prediction.get("metadata", {})
    if name in own:
        return tuple(own[name])
    return OUTPUT_METADATA.get(name) or FLUX_METADATA.get(name, ("1", name, ""))


#: Per-cell coefficients a predict record may hold (``record["cells"]``): store name →
#: row of the coefficient table.
CELL_COEFFICIENTS = {"route_shape": ("routing", "route_shape"),
                     "route_scale": ("routing", "route_scale"),
                     "beta_baseflow": ("beta", "baseflow"),
                     "beta_baseflow_half": ("beta", "baseflow_half"),
                     "gw_export": ("exchange", "gw_export"),
                     "precip_factor": ("forcing", "precip_factor"),
                     "temperature_offset": ("forcing", "temperature_offset"),
                     "temperature_spread": ("forcing", "temperature_spread")}


class RecordVariable(NamedTuple):
    """One store variable of a predict record.

    ``kind``: ``daily`` ([cells, days] per batch: fluxes, storages, α), ``cells`` ([cells]:
    SM_max) or ``scalar`` (one value: β). ``group`` and ``key`` say where it is in the
    record (``record[group][key]``, or ``record[group]`` when ``key`` is None).
    """

    name: str
    kind: Literal["daily", "cells", "scalar"]
    group: str
    key: str | None
    attrs: dict[str, str]

    def values(self, record: dict[str, Any]) -> Any:
        """The values of the variable in one record."""
        return record[self.group] if self.key is None else record[self.group][self.key]


def record_variables(record: dict[str, Any]) -> list[RecordVariable]:
    """The store variables of a predict record, in store order, with their attributes."""
    out = []
    for name in record["daily"]:
        unit, long_name, eq = output_metadata(name, record)
        out.append(RecordVariable(name, "daily", "daily", name,
                                  {"units": unit, "long_name": long_name, "equation": eq}))
    for name in record.get("alpha", {}):
        coef = BY_NAME[("alpha", name)]
        out.append(RecordVariable(f"alpha_{name}", "daily", "alpha", name,
                                  {"units": coef.unit, "long_name": f"learned {coef.symbol}"}))
    if "sm_max" in record:
        out.append(RecordVariable("sm_max", "cells", "sm_max", None,
                                  {"units": "mm", "long_name": "learned SM_max"}))
    for name in record.get("cells", {}):
        coef = BY_NAME[CELL_COEFFICIENTS[name]]
        out.append(RecordVariable(name, "cells", "cells", name,
                                  {"units": coef.unit, "long_name": f"learned {coef.symbol}"}))
    for group, prefix in (("beta", "beta"), ("observation", "obs")):
        for name in record.get(group, {}):
            coef = BY_NAME[(group, name)]
            out.append(RecordVariable(f"{prefix}_{name}", "scalar", group, name,
                                      {"units": coef.unit,
                                       "long_name": f"learned {coef.symbol}"}))
    return out


class ZarrPredictionWriter(BasePredictionWriter):
    """Collect the predicted batches and write one store at the end of prediction.

    Args:
        output: path of the zarr store to write.
        overwrite: replace an existing store at ``output``.
    """

    def __init__(self, output: str = "h2mv_outputs/predictions.zarr", overwrite: bool = False):
        super().__init__(write_interval="epoch")
        self.output, self.overwrite = output, overwrite

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:  # noqa: D102
        if trainer.world_size > 1:
            raise RuntimeError(
                "predict: expected one process, found world size "
                f"{trainer.world_size}; run h2mv predict on one device"
            )
        batches = [p for group in predictions for p in (group if isinstance(group, list)
                                                        else [group])]
        dm = trainer.datamodule
        ds, window = dm.dataset, dm.window("predict")
        time = ds["time"].values[window.start_day:window.end_day]
        index = torch.cat([b["cell_index"] for b in batches]).numpy()
        spatial = ds["mask"].dims
        shape = tuple(ds.sizes[d] for d in spatial)
        tile = (TILE * TILE,) if spatial == ("cell",) else (TILE, TILE)
        data = {}
        for v in record_variables(batches[0]):
            if v.kind == "scalar":
                data[v.name] = xr.DataArray(np.float32(v.values(batches[0])), attrs=v.attrs)
                continue
            values = torch.cat([v.values(b) for b in batches]).numpy()
            daily = v.kind == "daily"
            da = xr.DataArray(scatter(values, index, shape, tile),
                              dims=(*spatial, "time") if daily else spatial, attrs=v.attrs)
            data[v.name] = da.transpose("time", *spatial) if daily else da
        coords = {"time": time, **{c: ds[c] for c in ("lat", "lon")}}
        out = xr.Dataset(data, coords=coords)
        out.attrs.update(
            source="h2mv predict", h2mv_hybrid_version=__version__,
            input_store=str(dm.store_path), predicted_cells=int(len(index)),
            checkpoint=str(getattr(trainer, "ckpt_path", None) or ""),
        )
        path = write_store(out, None, self.output, overwrite=self.overwrite)
        print(f"predictions: {path} ({len(index)} cells × {len(time)} days)")
