"""The process-layer demo: the H2MV bucket on built-in site forcing, with its water balance."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from h2mv_hybrid.analysis.plots import OKABE_ITO, _plt, save, styled
from h2mv_hybrid.sites import site_climates, site_coefficients, site_forcing
from process_layers import Fluxes, h2mv, water_balance


def balance_table(fluxes: Fluxes, initial: h2mv.States, names: list[str]) -> str:
    """A per-cell water-balance table (mm over the whole run) as text."""
    wb = water_balance(fluxes, initial)
    header = (
        f"{'cell':>4}  {'climate':<13} {'P_in':>9} {'ET':>9} {'Q':>9} {'dS':>9} "
        f"{'residual':>10}"
    )
    rows = [header, "-" * len(header)]
    for i, name in enumerate(names):
        rows.append(
            f"{i:>4}  {name:<13} {float(wb.inputs[i]):9.1f} {float(wb.et[i]):9.1f} "
            f"{float(wb.runoff[i]):9.1f} {float(wb.storage_change[i]):9.2f} "
            f"{float(wb.residual[i]):10.2e}"
        )
    return "\n".join(rows)


#: Nominal first day of the built-in forcing (it has no calendar; 365-day years).
START = "2001-01-01"
#: Storages start empty, so the first year is a fill-up transient, shaded in the figure.
SPINUP_DAYS = 365


@styled
def plot_series(fluxes: Fluxes, prec: torch.Tensor, names: list[str], start: str = START):
    """One row per cell: storages (mm) left; fluxes (mm day⁻¹) right, rain bars from the top.

    The storages start empty, so the first :data:`SPINUP_DAYS` days are a transient and
    are shaded. Returns the figure.
    """
    import matplotlib.dates as mdates
    import pandas as pd

    plt = _plt()
    n = len(names)
    fig, axes = plt.subplots(n, 2, figsize=(13, 2.3 * n + 0.8), sharex=True, squeeze=False,
                             layout="constrained")
    days = pd.date_range(start, periods=fluxes.tws.shape[1], freq="D")
    spin_end = days[min(SPINUP_DAYS, len(days)) - 1]
    rains = []
    for i, name in enumerate(names):
        ax = axes[i, 0]
        for key, colour in (("swe", "sky"), ("sm", "orange"), ("gw", "blue"),
                            ("tws", "black")):
            ax.plot(days, fluxes[key][i].numpy(), color=OKABE_ITO[colour], lw=1,
                    label=key.upper())
        ax.set_ylabel("storage [mm]")
        ax.set_title(f"({'abcdefghij'[i]}) {name}: storages", loc="left")
        ax = axes[i, 1]
        for key, colour, label in (("ET", "green", "ET"),
                                   ("q_total", "vermillion", "total runoff"),
                                   ("q_base", "purple", "baseflow")):
            ax.plot(days, fluxes[key][i].numpy(), color=OKABE_ITO[colour], lw=1, label=label)
        ax.set_ylabel("flux [mm day⁻¹]")
        ax.set_title(f"({'abcdefghij'[i]}) {name}: fluxes", loc="left")
        rain = ax.twinx()  # a hyetograph hanging from the top, not over the fluxes
        rain.bar(days, prec[i].numpy(), color=OKABE_ITO["grey"], width=1.0, alpha=0.6,
                 label="precipitation")
        top = float(prec[i].max()) if float(prec[i].max()) > 0 else 1.0
        rain.set_ylim(3 * top, 0)
        rain.set_ylabel("precipitation [mm day⁻¹]")
        rains.append(rain)
        for a in axes[i]:
            a.axvspan(days[0], spin_end, color="0.9", zorder=0,
                      label="spin-up (storages start empty)")
    for ax in axes[-1]:
        locator = mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel(f"date (built-in forcing, 365-day years from {start})")
    entries: dict[str, object] = {}  # one legend for the figure, each label once
    for ax in (axes[0, 0], axes[0, 1], rains[0]):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="outside lower center",
               ncol=len(entries), frameon=False)
    fig.suptitle("H2MV bucket on built-in site forcing (hand-set coefficients)")
    return fig


def demo(
    cells: int = 5,
    years: int = 3,
    seed: int = 0,
    dtype: Literal["float32", "float64"] = "float64",
    out: str = "h2mv_outputs/demo",
    plot: bool = True,
) -> dict[str, float]:
    """Run the H2MV bucket on built-in forcing, print the water balance, plot the series.

    Args:
        cells: number of sites (the five climate archetypes in turn).
        years: length of the run in years of 365 days.
        seed: seed of the synthetic forcing.
        dtype: float32 or float64.
        out: output folder for the figure.
        plot: write ``bucket.png`` into ``out``.

    Returns:
        The largest absolute water-balance residual (mm) and the figure path.
    """
    if cells < 1 or years < 1:
        raise ValueError(f"cells and years: expected ≥ 1, found cells={cells}, years={years}")
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in dtypes:
        raise ValueError(f"dtype: expected one of {', '.join(dtypes)}, found {dtype!r}")
    forcing = site_forcing(cells, 365 * years, seed=seed, dtype=dtypes[dtype])
    alpha, static, beta = site_coefficients(forcing, seed=seed)
    initial = h2mv.initial_states(cells, dtype=dtypes[dtype])
    fluxes = h2mv.simulate(forcing, alpha, static, beta, initial)
    names = [c.name for c in site_climates(cells)]
    print(f"H2MV bucket, {cells} cells × {365 * years} days ({dtype}); water balance in mm:")
    print(balance_table(fluxes, initial, names))
    residual = float(water_balance(fluxes, initial).residual.abs().max())
    result: dict[str, float | str] = {"max_abs_residual_mm": residual}
    if plot:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "bucket.png"
        save(plot_series(fluxes, forcing["prec"], names), path, dpi=90)
        print(f"figure: {path}")
        result["figure"] = str(path)
    return result  # type: ignore[return-value]
