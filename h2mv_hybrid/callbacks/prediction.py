"""Write ``h2mv predict`` results to a zarr store, atomically.

Every daily output of the model's ``predict_step`` (for the hybrid: all fluxes and
storages of the bucket, fAPAR, every α, SM_max and β; for the LSTM heads: the forecast
soil moisture) of the predicted cells, on the input store's layout (time, lat, lon or
time, cell), with ``units`` and ``long_name``; cells that were not predicted are NaN.
The store is written under a temporary name and renamed into place, so an interrupted
run leaves no half-written store under the final name.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from lightning.pytorch.callbacks import BasePredictionWriter

from h2mv_hybrid import __version__
from h2mv_hybrid.data.gridding import scatter
from h2mv_hybrid.data.synth import TILE, write_store
from process_layers import FLUX_METADATA
from process_layers.parameters import BY_NAME


def output_metadata(name: str, prediction: dict) -> tuple[str, str, str]:
    """(units, long_name, equation) of a daily output: the head's own, else the bucket's."""
    own = prediction.get("metadata", {})
    if name in own:
        return tuple(own[name])
    if name == "fapar":
        return "1", "fraction of absorbed PAR", "A5"
    return FLUX_METADATA.get(name, ("1", name, ""))


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
        cat = lambda key, name: torch.cat([b[key][name] for b in batches]).numpy()  # noqa: E731
        spatial = ds["mask"].dims
        shape = tuple(ds.sizes[d] for d in spatial)
        tile = (TILE * TILE,) if spatial == ("cell",) else (TILE, TILE)
        order = ("time", *spatial)
        data = {}
        for name in batches[0]["daily"]:
            unit, long_name, eq = output_metadata(name, batches[0])
            data[name] = xr.DataArray(
                scatter(cat("daily", name), index, shape, tile), dims=(*spatial, "time"),
                attrs={"units": unit, "long_name": long_name, "equation": eq},
            ).transpose(*order)
        for name in batches[0].get("alpha", {}):
            coef = BY_NAME[("alpha", name)]
            data[f"alpha_{name}"] = xr.DataArray(
                scatter(cat("alpha", name), index, shape, tile), dims=(*spatial, "time"),
                attrs={"units": coef.unit, "long_name": f"learned {coef.symbol}"},
            ).transpose(*order)
        if "sm_max" in batches[0]:
            sm_max = torch.cat([b["sm_max"] for b in batches]).numpy()
            data["sm_max"] = xr.DataArray(scatter(sm_max, index, shape, tile), dims=spatial,
                                          attrs={"units": "mm", "long_name": "learned SM_max"})
        for name, value in batches[0].get("beta", {}).items():
            coef = BY_NAME[("beta", name)]
            data[f"beta_{name}"] = xr.DataArray(np.float32(value), attrs={
                "units": coef.unit, "long_name": f"learned {coef.symbol}"})
        coords = {"time": time, **{c: ds[c] for c in ("lat", "lon")}}
        out = xr.Dataset(data, coords=coords)
        out.attrs.update(
            source="h2mv predict", h2mv_hybrid_version=__version__,
            input_store=str(dm.store_path), predicted_cells=int(len(index)),
            checkpoint=str(getattr(trainer, "ckpt_path", None) or ""),
        )
        path = write_store(out, None, self.output, overwrite=self.overwrite)
        print(f"predictions: {path} ({len(index)} cells × {len(time)} days)")
