"""Figures of the analyses (matplotlib; PNG through :func:`save`).

One plotting counterpart per analysis:

- ``evaporative_fraction``, ``runoff_coefficient``, ``transpiration_fraction``,
  ``baseflow_index``, SM_max (``ensemble_patterns``): :func:`plot_map`, :func:`plot_patterns`;
- ``tws_decomposition``: :func:`plot_tws_decomposition`;
- ``performance`` / ``ensemble_performance``: :func:`plot_performance` (Fig. 5);
- ``msc`` / ``ensemble_msc``: :func:`plot_msc`;
- ``equifinality`` / ``ensemble_equifinality``: :func:`plot_equifinality` (Fig. 8);
- ``state_spread`` / ``ensemble_spread``: :func:`plot_state_spread` (Fig. 7).

Every function returns a ``matplotlib.figure.Figure`` and draws on nothing global, so
it works headless (matplotlib is the ``plots`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from h2mv_hybrid.atomic import atomic_file

#: Units and titles of what the maps and panels show, where the data carry none.
LABELS = {
    "tws": ("TWS anomaly", "mm"), "et": ("ET", "mm day⁻¹"), "q": ("runoff", "mm day⁻¹"),
    "fapar": ("fAPAR", "–"), "swe": ("SWE", "mm"), "sm": ("SM", "mm"), "gw": ("GW", "mm"),
}
STATE_LABELS = {"swe": "SWE", "sm": "SM", "gw": "GW", "tws": "TWS"}
#: Readable names of the latent quantities in identifiability tables.
LATENT_LABELS = {"sm_max": "SM_max (soil capacity)", "tws": "TWS", "sm": "soil moisture",
                 "gw": "groundwater", "swe": "snow (SWE)", "T": "transpiration",
                 "Es": "soil evaporation", "q_base": "baseflow", "q_surf": "surface runoff",
                 "baseflow_index": "baseflow index (map)",
                 "transpiration_fraction": "T / ET (map)"}
METRIC_LABELS = {"r": "Pearson r", "rmse": "RMSE", "sdr": "SDR (σ_pred / σ_obs)",
                 "kge": "KGE", "nse": "NSE", "bias": "bias (pred − obs)"}
#: Diverging colour maps for signed quantities, sequential ones for the rest.
MAP_STYLE = {
    "evaporative_fraction": ("YlGn", 0.0, 1.0),
    "runoff_coefficient": ("Blues", 0.0, 1.0),
    "transpiration_fraction": ("Greens", 0.0, 1.0),
    "baseflow_index": ("PuBu", 0.0, 1.0),
    "tws_share_swe": ("Purples", 0.0, 1.0),
    "tws_share_sm": ("Oranges", 0.0, 1.0),
    "tws_share_gw": ("Blues", 0.0, 1.0),
    "sm_max": ("viridis", None, None),
    "sm_max_spread": ("magma_r", 0.0, None),
}


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def pretty_units(units: str) -> str:
    """CF units as a reader writes them: ``mm day-1`` → ``mm day⁻¹``, ``1`` → ``–``."""
    if units in ("1", ""):
        return "–" if units == "1" else ""
    words = []
    for word in str(units).split():
        base = word.rstrip("-0123456789")
        words.append(base + word[len(base):].translate(_SUPERSCRIPT))
    return " ".join(words)


def _label(da: xr.DataArray) -> str:
    name = da.attrs.get("long_name", da.name or "")
    units = pretty_units(da.attrs.get("units", ""))
    return f"{name} [{units}]" if units else str(name)


def save(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a figure as PNG atomically (a temporary file renamed into place) and close it."""
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        _plt().close(fig)
    return Path(path)


def plot_map(da: xr.DataArray, ax=None, cmap: str | None = None, vmin: float | None = None,
             vmax: float | None = None, title: str | None = None, label: str | None = None):
    """A lat/lon map of one field with a labelled colour bar (``long_name [units]``).

    Args:
        da: field with ``lat`` and ``lon`` dims (degrees north / east), or a point layout
            (a ``cell`` dim with ``lat`` / ``lon`` coordinates, drawn as markers); NaN is
            blank.
        ax: axes to draw on (default: a new figure).
        cmap: colour map (default from :data:`MAP_STYLE`, else viridis).
        vmin: lower end of the colour range (default from :data:`MAP_STYLE`, else the 2nd
            percentile).
        vmax: upper end (default from :data:`MAP_STYLE`, else the 98th percentile).
        title: panel title (default: the field's ``long_name``).
        label: colour-bar label (default: ``long_name [units]``).
    """
    plt = _plt()
    points = "cell" in da.dims and {"lat", "lon"} <= set(da.coords)
    if not points and not {"lat", "lon"} <= set(da.dims):
        raise ValueError(f"{da.name}: expected lat and lon dims (a grid) or a cell dim with "
                         f"lat and lon coordinates (points), found {da.dims}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    style = MAP_STYLE.get(str(da.name), ("viridis", None, None))
    cmap = cmap or style[0]
    values = da.values if points else da.transpose("lat", "lon").values
    finite = values[np.isfinite(values)]
    if vmin is None:
        vmin = style[1] if style[1] is not None else (
            float(np.percentile(finite, 2)) if finite.size else 0.0)
    if vmax is None:
        vmax = style[2] if style[2] is not None else (
            float(np.percentile(finite, 98)) if finite.size else 1.0)
    ax.set_facecolor("0.93")  # ocean and unpredicted cells: light grey, not a data colour
    lat, lon = da["lat"].values, da["lon"].values
    if points:  # stations or catchments: one marker each
        ok = np.isfinite(values)
        mesh = ax.scatter(lon[ok], lat[ok], c=values[ok], cmap=cmap, vmin=vmin, vmax=vmax,
                          s=12, marker="s", linewidths=0)
        pad = 2.0
        ax.set_xlim(lon.min() - pad, lon.max() + pad)
        ax.set_ylim(lat.min() - pad, lat.max() + pad)
    else:
        mesh = ax.pcolormesh(lon, lat, values, cmap=cmap, vmin=vmin, vmax=vmax,
                             shading="nearest")
        half_lat = abs(lat[1] - lat[0]) / 2 if len(lat) > 1 else 0.5
        half_lon = abs(lon[1] - lon[0]) / 2 if len(lon) > 1 else 0.5
        ax.set_xlim(lon.min() - half_lon, lon.max() + half_lon)
        rows = np.flatnonzero(np.isfinite(values).any(axis=1))
        # A global grid without data south of 60° S (no Antarctica) is drawn from 60° S.
        south = lat.min() - half_lat
        if rows.size and lat[rows].min() > -60 > south:
            south = -60.0
        ax.set_ylim(south, lat.max() + half_lat)
    ax.set_aspect("equal")
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(title if title is not None else da.attrs.get("long_name", str(da.name)))
    ax.figure.colorbar(mesh, ax=ax, label=label if label is not None else _label(da),
                       shrink=0.8, pad=0.02)
    return ax.figure


def plot_extrapolation(index: xr.Dataset, table):
    """(a) map of the extrapolation index (mean over members), (b) skill by index class.

    Args:
        index: :func:`~h2mv_hybrid.analysis.extrapolation.ensemble_extrapolation`.
        table: :func:`~h2mv_hybrid.analysis.extrapolation.ensemble_skill_by_extrapolation`.
    """
    plt = _plt()
    fig, (ax_map, ax) = plt.subplots(1, 2, figsize=(13, 4.2),
                                     gridspec_kw={"width_ratios": [1.5, 1]})
    mean = index["extrapolation_index"].mean("member").rename("extrapolation_index")
    plot_map(mean, ax=ax_map, cmap="magma_r", vmin=0.0, vmax=3.0,
             title="(a) extrapolation index, mean over members",
             label="distance to the training cells [–]\n(1 = a typical training cell)")
    classes = list(dict.fromkeys(table["index"].astype(str)))
    x = np.arange(len(classes))
    colors = plt.get_cmap("tab10")
    for i, (name, rows) in enumerate(table.groupby("constraint", sort=False)):
        rows = rows.set_index(rows["index"].astype(str)).reindex(classes)
        shift = (i - (table["constraint"].nunique() - 1) / 2) * 0.08
        ax.errorbar(x + shift, rows["median"], yerr=[rows["median"] - rows["q25"],
                                                     rows["q75"] - rows["median"]],
                    marker="o", ms=4, capsize=2, lw=1.2, color=colors(i), label=name)
    ax.set_xticks(x, classes)
    ax.set_xlabel("extrapolation index [–]")
    ax.set_ylabel("per-cell KGE of monthly values [–]\n(median, quartiles)")
    ax.set_title("(b) skill by distance to the training cells")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.legend(title="constraint", fontsize=8, title_fontsize=8, frameon=False)
    counts = table.groupby("index", observed=False)["member_cells"].max().reindex(classes)
    for xi, n in zip(x, counts, strict=True):  # member-cells per class, along the top
        ax.annotate(f"n = {int(n)}", (xi, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, -10), textcoords="offset points", ha="center", fontsize=7,
                    color="0.4")
    fig.tight_layout()
    return fig


def plot_sensitivity(result: xr.Dataset, season: str = "all"):
    """Maps of runoff's sensitivity to precipitation, energy and temperature (member mean).

    Args:
        result: :func:`~h2mv_hybrid.analysis.sensitivity.sensitivity` (or its ensemble).
        season: ``all`` or DJF, MAM, JJA, SON.
    """
    plt = _plt()
    panels = (("q_prec", "(a) elasticity of runoff to precipitation", "viridis", (0.0, 3.0)),
              ("q_rn", "(b) elasticity of runoff to energy (Rn or PET)", "RdBu_r", (-1.5, 1.5)),
              ("q_tair", "(c) sensitivity of runoff to a warming", "RdBu_r", (-0.1, 0.1)))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4))
    for ax, (name, title, cmap, (lo, hi)) in zip(axes, panels, strict=True):
        da = result[name].sel(season=season)
        if "member" in da.dims:
            da = da.mean("member")
        unit = "[–]" if name != "q_tair" else "[K⁻¹]"
        what = "(dQ/Q) / (dP/P)" if name == "q_prec" else (
            "(dQ/Q) / (dRn/Rn)" if name == "q_rn" else "(dQ/Q) per K")
        plot_map(da.rename(name), ax=ax, cmap=cmap, vmin=lo, vmax=hi, title=title,
                 label=f"{what} {unit}")
    members = result.attrs.get("members")
    fig.suptitle(f"Sensitivities of mean runoff, {result.attrs.get('period', '')}, season "
                 f"{season}" + (f", mean over {members} members" if members else ""),
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_identifiability(table):
    """Leave-one-constraint-out: (a) skill per variant, (b) equifinality relative to all.

    (a) KGE of each constraint per variant; (b) equifinality of each latent across members
    relative to the ensemble trained on all constraints
    (:mod:`h2mv_hybrid.ensemble.identify`).
    """
    plt = _plt()
    variants = list(dict.fromkeys(table["variant"]))
    kge = table[table["metric"] == "kge (monthly)"].pivot_table(
        index="quantity", columns="variant", values="value", sort=False)[variants]
    eq = table[table["metric"] == "equifinality"].pivot_table(
        index="quantity", columns="variant", values="value", sort=False)[variants]
    ratio = eq[variants[1:]].div(eq[variants[0]], axis=0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(6 + 1.6 * len(variants), 0.45 * len(eq) + 2.6),
                               gridspec_kw={"width_ratios": [len(variants), len(variants) - 1]})
    im = a.imshow(kge.values, cmap="RdYlGn", vmin=-0.5, vmax=1.0, aspect="auto")
    a.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
    a.set_yticks(range(len(kge)), [f"{q} (constraint)" for q in kge.index])
    for (i, j), v in np.ndenumerate(kge.values):
        a.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    a.set_title("(a) skill on the test cells")
    fig.colorbar(im, ax=a, label="KGE of monthly values [–]", shrink=0.8)
    log = np.log2(ratio.values.astype(float))
    im = b.imshow(log, cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    b.set_xticks(range(len(ratio.columns)), list(ratio.columns), rotation=30, ha="right")
    b.set_yticks(range(len(ratio)), [LATENT_LABELS.get(q, q) for q in ratio.index])
    for (i, j), v in np.ndenumerate(ratio.values):
        b.text(j, i, f"×{v:.2g}", ha="center", va="center", fontsize=8)
    b.set_title("(b) equifinality across members,\nrelative to all constraints")
    fig.colorbar(im, ax=b, label="log₂ (equifinality / with all constraints) [–]", shrink=0.8)
    fig.tight_layout()
    return fig


def plot_scatter(model: xr.DataArray, observed: xr.DataArray, xlabel: str, ylabel: str,
                 title: str):
    """A learned quantity against an observed one across cells, with the 1:1 line.

    The title gets the Spearman and Pearson correlations of the cells where both are
    finite (``n``).
    """
    import pandas as pd

    plt = _plt()
    df = pd.DataFrame({"x": np.asarray(observed.values, float).ravel(),
                       "y": np.asarray(model.values, float).ravel()}).dropna()
    rho = df["x"].corr(df["y"], method="spearman")
    r = df["x"].corr(df["y"])
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.scatter(df["x"], df["y"], s=18, color="#4c72b0", edgecolor="white", linewidth=0.5)
    lo = float(min(df["x"].min(), df["y"].min(), 0))
    hi = float(max(df["x"].max(), df["y"].max()))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", label="1:1")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nSpearman ρ = {rho:.2f}, Pearson r = {r:.2f}, n = {len(df)}",
                 fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_folds(fold: xr.DataArray):
    """The spatial-block folds: the test fold black, each validation fold its own colour."""
    plt = _plt()
    from matplotlib.colors import BoundaryNorm, ListedColormap

    values = fold.where(fold >= -1)
    k = int(values.max()) + 1
    palette = plt.get_cmap("tab20" if k > 10 else "tab10")
    cmap = ListedColormap(["black", *[palette(i) for i in range(k)]])
    norm = BoundaryNorm(np.arange(-1.5, k), cmap.N)
    fig, ax = plt.subplots(figsize=(8, 4))
    plot_map(values.rename("fold"), ax=ax, cmap=cmap, vmin=None, vmax=None,
             title=f"spatial-block folds: test (black) and {k} validation folds",
             label="fold")
    mesh = ax.collections[0]
    mesh.set_norm(norm)
    bar = fig.axes[-1]
    bar.set_yticks(np.arange(-1, k), ["test", *[str(i) for i in range(k)]])
    return fig


def plot_patterns(maps: xr.Dataset, names: Sequence[str] | None = None):
    """Every emergent-pattern map of :func:`~h2mv_hybrid.analysis.ensemble.ensemble_patterns`."""
    plt = _plt()
    names = list(names or [n for n in MAP_STYLE if n in maps])
    cols = 2
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        plot_map(maps[name], ax=ax)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    members = maps.attrs.get("members")
    if members:
        fig.suptitle(f"Emergent patterns, mean over {members} members")
    return fig


def plot_tws_decomposition(shares: xr.Dataset):
    """Maps of each storage's share of TWS variability (Getirana et al. 2017, eqs 13–14)."""
    plt = _plt()
    names = list(shares.data_vars)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        da = shares[name]
        store = str(name).removeprefix("tws_share_").upper()
        plot_map(da, ax=ax, cmap=MAP_STYLE.get(str(name), ("viridis",))[0], vmin=0, vmax=1,
                 title=f"share of {store} in TWS variability", label="C_rel [–] (eq. 14)")
    return fig


def plot_performance(table: xr.Dataset, metrics: Sequence[str] | None = None):
    """Fig. 5: bars of the mean over members with min–max whiskers.

    Args:
        table: :func:`ensemble_performance` output (metrics × constraint × component ×
            member), or one without ``member`` (no whiskers).
        metrics: rows to draw (default: every metric in the table).
    """
    plt = _plt()
    metrics = list(metrics or table.data_vars)
    constraints = list(table["constraint"].values)
    components = list(table["component"].values)
    fig, axes = plt.subplots(len(metrics), len(constraints),
                             figsize=(2.3 * len(constraints), 1.9 * len(metrics)),
                             squeeze=False, sharex=True)
    x = np.arange(len(components))
    for i, metric in enumerate(metrics):
        for j, c in enumerate(constraints):
            ax = axes[i, j]
            da = table[metric].sel(constraint=c)
            if "member" in da.dims:
                mean, lo, hi = (da.mean("member").values, da.min("member").values,
                                da.max("member").values)
            else:
                mean = lo = hi = da.values
            ax.bar(x, mean, color=["#4c72b0", "#dd8452", "#55a868"][:len(x)], width=0.6)
            ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="k",
                        capsize=4, lw=1)
            if metric in ("r", "kge", "nse"):
                ax.axhline(1.0, color="0.5", lw=0.6, ls=":")
            if metric == "sdr":
                ax.axhline(1.0, color="0.5", lw=0.6, ls=":")
            ax.axhline(0.0, color="0.3", lw=0.6)
            if i == 0:
                name, unit = LABELS.get(str(c), (str(c), ""))
                ax.set_title(name)
            if j == 0:
                unit = ""
                if metric in ("rmse", "bias"):
                    unit = " (unit of each column)"
                ax.set_ylabel(METRIC_LABELS.get(metric, metric) + unit, fontsize=8)
            ax.set_xticks(x, [str(c).upper() if c != "monthly" else "monthly"
                              for c in components], fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("Performance on the test cells: bars = mean over members, whiskers = "
                 "min / max", fontsize=10)
    fig.tight_layout()
    return fig


def plot_msc(msc: xr.Dataset, targets: Sequence[str] | None = None):
    """Mean seasonal cycles: observation (black) and the members' range (shaded) and mean."""
    plt = _plt()
    targets = list(targets or [k[:-5] for k in msc.data_vars if k.endswith("_pred")])
    fig, axes = plt.subplots(1, len(targets), figsize=(3.2 * len(targets), 2.8),
                             squeeze=False)
    for ax, t in zip(axes.flat, targets, strict=False):
        pred, obs = msc[f"{t}_pred"], msc[f"{t}_obs"]
        month = pred["month"].values
        ax.fill_between(month, pred.min("member"), pred.max("member"), color="#4c72b0",
                        alpha=0.3, lw=0, label="members (range)")
        ax.plot(month, pred.mean("member"), color="#4c72b0", label="members (mean)")
        ax.plot(month, obs, color="k", ls="--", label="observed")
        name, unit = LABELS.get(t, (t, pred.attrs.get("units", "")))
        ax.set_title(name)
        ax.set_xlabel("month")
        ax.set_ylabel(f"{name} [{pretty_units(pred.attrs.get('units') or unit)}]")
        ax.set_xticks([1, 4, 7, 10], ["Jan", "Apr", "Jul", "Oct"])
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Mean seasonal cycle over the test cells", fontsize=10)
    fig.tight_layout()
    return fig


#: Panels of the equifinality figure, as in the paper's Fig. 8a–e.
EQUIFINALITY_GROUPS = {
    "SM_max (across cells)": ("sm_max",),
    "states": ("tws", "tws_anomaly", "sm", "gw", "swe"),
    "evapotranspiration": ("Ei", "Es", "T", "ET"),
    "recharge and runoff": ("r_soil", "r_gw", "q_surf", "q_base", "q_total"),
    "fractions": ("r_soil_frac", "r_gw_frac", "q_surf_frac"),
    "snow": ("snow_acc", "snow_melt"),
}


def plot_equifinality(table: xr.Dataset):
    """Fig. 8: stacked bars of the phase, bias and variance terms, one panel per group.

    Each panel has its own linear scale (values differ by orders of magnitude between
    groups); variables outside :data:`EQUIFINALITY_GROUPS` go to a last panel.
    """
    plt = _plt()
    names = [str(v) for v in table["variable"].values]
    groups = {g: [v for v in vs if v in names] for g, vs in EQUIFINALITY_GROUPS.items()}
    grouped = {v for vs in groups.values() for v in vs}
    groups["other"] = [v for v in names if v not in grouped]
    groups = {g: vs for g, vs in groups.items() if vs}
    cols = min(3, len(groups))
    rows = int(np.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    colors = {"phase": "#4c72b0", "bias": "#dd8452", "variance": "#55a868"}
    panels = zip("abcdefg", groups.items(), strict=False)
    for ax, (letter, (group, variables)) in zip(axes.flat, panels, strict=False):
        sub = table.sel(variable=variables)
        bottom = np.zeros(len(variables))
        for term, color in colors.items():
            v = sub[term].values
            v = np.where(np.isfinite(v), v, 0.0)  # undefined terms (no variance) drawn as 0
            ax.bar(variables, v, bottom=bottom, color=color, label=f"{term} term", width=0.7)
            bottom += v
        ax.set_title(f"({letter}) {group}", fontsize=9)
        ax.tick_params(axis="x", rotation=60, labelsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("equifinality index [–]\n(pair MSE / pair mean variance)", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    pairs = table.attrs.get("pairs")
    fig.suptitle("Equifinality across members" + (f", mean over {pairs} pairs" if pairs
                                                    else ""), fontsize=10)
    fig.tight_layout()
    return fig


def plot_state_spread(spread: xr.Dataset):
    """Fig. 7: (a) anomaly bands, (b) range of means, (c) SM mean vs TWS mean per member."""
    plt = _plt()
    import matplotlib.dates as mdates

    states = [str(s) for s in spread["state"].values]
    fig = plt.figure(figsize=(13, 3.0 + 1.6 * len(states)))
    grid = fig.add_gridspec(len(states), 3, width_ratios=[3.0, 1.2, 1.4])
    time = spread["time"].values
    for i, s in enumerate(states):
        ax = fig.add_subplot(grid[i, 0])
        a = spread["anomaly"].sel(state=s)
        ax.fill_between(time, a.min("member"), a.max("member"), color="#4c72b0", lw=0.8,
                        alpha=0.6)
        ax.set_ylabel(f"{STATE_LABELS.get(s, s)} anomaly [mm]", fontsize=8)
        locator = mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if i == 0:
            ax.set_title("(a) anomalies (state − mean); band = range across members",
                         fontsize=9)
        if i < len(states) - 1:
            ax.tick_params(labelbottom=False)
    ax = fig.add_subplot(grid[:, 1])
    mean = spread["mean"]
    x = np.arange(len(states))
    mid, lo, hi = mean.mean("member").values, mean.min("member").values, mean.max(
        "member").values
    ax.errorbar(x, mid, yerr=[mid - lo, hi - mid], fmt="o", color="k", capsize=6)
    ax.set_xticks(x, [STATE_LABELS.get(s, s) for s in states])
    ax.set_ylabel("time mean of the state [mm]")
    ax.set_title("(b) mean over members,\nmin / max", fontsize=9)
    ax = fig.add_subplot(grid[:, 2])
    if {"sm", "tws"} <= set(states):
        sm, tws = mean.sel(state="sm").values, mean.sel(state="tws").values
        gw = mean.sel(state="gw").values if "gw" in states else None
        pts = ax.scatter(sm, tws, c=gw, cmap="viridis", s=30, edgecolor="k", lw=0.5)
        if gw is not None:
            fig.colorbar(pts, ax=ax, label="GW mean [mm]")
        slope = spread.attrs.get("sm_tws_slope")
        if slope is not None and np.isfinite(slope):
            xs = np.linspace(sm.min(), sm.max(), 2)
            ax.plot(xs, spread.attrs["sm_tws_intercept"] + slope * xs, color="0.3")
            ax.set_title(f"(c) per member: r = {spread.attrs['sm_tws_r']:.2f}", fontsize=9)
        ax.set_xlabel("SM mean [mm]")
        ax.set_ylabel("TWS mean [mm]")
    else:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
