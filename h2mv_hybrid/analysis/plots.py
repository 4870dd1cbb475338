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

import functools
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
METRIC_LABELS = {"r": "Pearson r", "sdr": "SDR (σ_pred / σ_obs)", "kge": "KGE",
                 "nse": "NSE", "rmse": "RMSE", "bias": "bias (pred − obs)"}
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


#: Okabe & Ito's colour-blind-safe palette (Wong 2011, Nat. Methods 8, 441), by name.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00",
             "purple": "#CC79A7", "grey": "#999999"}
#: One font scale for every figure: labels and titles 9 pt, ticks and legends 8 pt.
STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "legend.fontsize": 8, "legend.title_fontsize": 8,
         "figure.titlesize": 10}


def styled(fn):
    """Draw ``fn``'s figure under :data:`STYLE` and the Okabe–Ito colour cycle."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        plt = _plt()
        from cycler import cycler

        cycle = cycler(color=[OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion",
                                                     "purple", "sky", "yellow", "black")])
        with plt.rc_context({**STYLE, "axes.prop_cycle": cycle}):
            return fn(*args, **kwargs)

    return wrapper


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


@styled
def plot_map(da: xr.DataArray, ax=None, cmap: str | None = None, vmin: float | None = None,
             vmax: float | None = None, title: str | None = None, label: str | None = None,
             colorbar: str = "vertical"):
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
        colorbar: ``vertical`` (right of the map) or ``horizontal`` (below it, for maps
            side by side, whose vertical bars would run into the next map's labels).
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
    label = label if label is not None else _label(da)
    if colorbar == "horizontal":
        ax.figure.colorbar(mesh, ax=ax, label=label, orientation="horizontal", shrink=0.8,
                           pad=0.05, aspect=30)
    else:
        ax.figure.colorbar(mesh, ax=ax, label=label, shrink=0.8, pad=0.02)
    return ax.figure


@styled
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
    colors = [OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion", "purple",
                                     "sky", "yellow", "black")]
    for i, (name, rows) in enumerate(table.groupby("constraint", sort=False)):
        rows = rows.set_index(rows["index"].astype(str)).reindex(classes)
        shift = (i - (table["constraint"].nunique() - 1) / 2) * 0.08
        ax.errorbar(x + shift, rows["median"], yerr=[rows["median"] - rows["q25"],
                                                     rows["q75"] - rows["median"]],
                    marker="o", ms=4, capsize=2, lw=1.2, color=colors[i % len(colors)],
                    label=LABELS.get(str(name), (str(name),))[0])
    counts = table.groupby("index", observed=False)["member_cells"].max().reindex(classes)
    # the member-cells of each class under its label: over the panel they hid the data
    ax.set_xticks(x, [f"{c}\n(n = {int(n)})" for c, n in zip(classes, counts, strict=True)])
    ax.set_xlabel("extrapolation index [–]")
    ax.set_ylabel("per-cell KGE of monthly values [–]\n(median, quartiles)")
    ax.set_title("(b) skill by distance to the training cells")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.legend(title="constraint", frameon=False)
    fig.tight_layout()
    return fig


@styled
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


@styled
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


@styled
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


@styled
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


#: Colour-bar labels of the pattern maps (their long names are the panel titles).
MAP_LABELS = {"evaporative_fraction": "ET / Rn [–]", "runoff_coefficient": "Q / P [–]",
              "transpiration_fraction": "T / ET [–]",
              "baseflow_index": "Q_base / Q_total [–]", "sm_max": "SM_max [mm]",
              "sm_max_spread": "max − min over members [mm]"}
#: The ratio maps of :func:`~h2mv_hybrid.analysis.patterns.emergent_patterns`.
RATIO_PATTERNS = ("evaporative_fraction", "runoff_coefficient", "transpiration_fraction",
                  "baseflow_index")


@styled
def plot_patterns(maps: xr.Dataset, names: Sequence[str] | None = None,
                  title: str | None = None):
    """Maps of :func:`~h2mv_hybrid.analysis.ensemble.ensemble_patterns`, two per row.

    Args:
        maps: the pattern maps.
        names: which maps (default: every one of :data:`MAP_STYLE` in ``maps``).
        title: the figure's title (default: "Emergent patterns, mean over N members" when
            every map is a ratio pattern, else none).
    """
    plt = _plt()
    names = list(names or [n for n in MAP_STYLE if n in maps])
    cols = 2 if len(names) > 1 else 1
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.2 * rows), squeeze=False,
                             layout="constrained")
    for ax, letter, name in zip(axes.flat, "abcdefghij", names, strict=False):
        da = maps[name]
        plot_map(da, ax=ax, title=f"({letter}) {da.attrs.get('long_name', name)}",
                 label=MAP_LABELS.get(name))
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    members = maps.attrs.get("members")
    if title is None and members and all(n in RATIO_PATTERNS for n in names):
        title = f"Emergent patterns, mean over {members} members"
    if title:
        fig.suptitle(title)
    return fig


#: Long names of the storages in a TWS decomposition.
STORAGE_NAMES = {"swe": "snow (SWE)", "sm": "soil moisture (SM)", "gw": "groundwater (GW)"}


@styled
def plot_tws_decomposition(shares: xr.Dataset):
    """Maps of each storage's share of TWS variability (Getirana et al. 2017, eqs 13–14).

    The colour bars lie under the maps, so that no label runs into the next map.
    """
    plt = _plt()
    order = [f"tws_share_{k}" for k in STORAGE_NAMES]
    names = sorted(shares.data_vars, key=lambda n: order.index(n) if n in order else 99)
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.0), squeeze=False,
                             layout="constrained")
    for ax, letter, name in zip(axes.flat, "abcdef", names, strict=False):
        store = str(name).removeprefix("tws_share_")
        plot_map(shares[name], ax=ax, cmap=MAP_STYLE.get(str(name), ("viridis",))[0], vmin=0,
                 vmax=1, title=f"({letter}) {STORAGE_NAMES.get(store, store.upper())}",
                 label="share of TWS variability, C_rel [–]", colorbar="horizontal")
    for ax in axes.flat[1:]:
        ax.set_ylabel("")
    fig.suptitle("Share of each storage in TWS variability (Getirana et al. 2017, eq. 14)")
    return fig


#: Short metric names for per-panel axis labels.
METRIC_SHORT = {"rmse": "RMSE", "bias": "bias"}


@styled
def plot_performance(table: xr.Dataset, metrics: Sequence[str] | None = None):
    """Fig. 5: bars of the mean over members with min–max whiskers.

    Args:
        table: :func:`ensemble_performance` output (metrics × constraint × component ×
            member), or one without ``member`` (no whiskers). Its ``units`` coordinate
            (per constraint) labels RMSE and bias; without it :data:`LABELS` does.
        metrics: rows to draw (default: every metric in the table).
    """
    plt = _plt()
    if metrics is None:  # the usual order (correlation, variability, skill, errors)
        metrics = sorted(table.data_vars, key=lambda m: list(METRIC_LABELS).index(m)
                         if m in METRIC_LABELS else 99)
    metrics = list(metrics)
    constraints = [str(c) for c in table["constraint"].values]
    components = list(table["component"].values)
    if "units" in table.coords:
        units = [pretty_units(str(u)) for u in table["units"].values]
    else:
        units = [LABELS.get(c, (c, ""))[1] for c in constraints]
    fig, axes = plt.subplots(len(metrics), len(constraints),
                             figsize=(2.5 * len(constraints), 1.9 * len(metrics) + 0.6),
                             squeeze=False, sharex=True, layout="constrained")
    x = np.arange(len(components))
    colors = [OKABE_ITO[k] for k in ("blue", "orange", "green", "purple")]
    for i, metric in enumerate(metrics):
        for j, c in enumerate(constraints):
            ax = axes[i, j]
            da = table[metric].sel(constraint=c)
            if "member" in da.dims:
                mean, lo, hi = (da.mean("member").values, da.min("member").values,
                                da.max("member").values)
            else:
                mean = lo = hi = da.values
            ax.bar(x, mean, color=colors[:len(x)], width=0.6)
            ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="k",
                        capsize=4, lw=1)
            if metric in ("r", "kge", "nse", "sdr"):
                ax.axhline(1.0, color="0.5", lw=0.6, ls=":")
            ax.axhline(0.0, color="0.3", lw=0.6)
            if i == 0:
                ax.set_title(LABELS.get(c, (c, ""))[0])
            if metric in METRIC_SHORT:  # a unit per column: every panel says its own
                unit = units[j] or "–"
                name = METRIC_LABELS.get(metric, metric) if j == 0 else METRIC_SHORT[metric]
                ax.set_ylabel(f"{name} [{unit}]")
            elif j == 0:
                ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} [–]")
            ax.set_xticks(x, [str(c).upper() if c != "monthly" else "monthly"
                              for c in components])
    fig.suptitle("Performance on the test cells: bars = mean over members, whiskers = "
                 "min / max")
    return fig


@styled
def plot_msc(msc: xr.Dataset, targets: Sequence[str] | None = None):
    """Mean seasonal cycles: observation (black) and the members' range (shaded) and mean."""
    plt = _plt()
    targets = list(targets or [k[:-5] for k in msc.data_vars if k.endswith("_pred")])
    fig, axes = plt.subplots(1, len(targets), figsize=(3.0 * len(targets), 3.0),
                             squeeze=False, layout="constrained")
    blue = OKABE_ITO["blue"]
    for ax, letter, t in zip(axes.flat, "abcdefghij", targets, strict=False):
        pred, obs = msc[f"{t}_pred"], msc[f"{t}_obs"]
        month = pred["month"].values
        ax.fill_between(month, pred.min("member"), pred.max("member"), color=blue,
                        alpha=0.25, lw=0, label="members (range)")
        ax.plot(month, pred.mean("member"), color=blue, lw=1.5, label="members (mean)")
        ax.plot(month, obs, color="k", ls="--", lw=1.2, label="observed")
        name, unit = LABELS.get(t, (t, pred.attrs.get("units", "")))
        ax.set_title(f"({letter}) {name}")
        ax.set_xlabel("month")
        ax.set_ylabel(f"{name} [{pretty_units(pred.attrs.get('units') or unit) or '–'}]")
        ax.set_xticks([1, 4, 7, 10], ["Jan", "Apr", "Jul", "Oct"])
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle("Mean seasonal cycle over the test cells")
    return fig


#: Groups of the equifinality figure, as in the paper's Fig. 8a–e, with readable names.
EQUIFINALITY_GROUPS = {
    "static (across cells)": ("sm_max",),
    "states": ("tws", "tws_anomaly", "sm", "gw", "swe"),
    "evapotranspiration": ("Ei", "Es", "T", "ET"),
    "recharge and runoff": ("r_soil", "r_gw", "q_surf", "q_base", "q_total"),
    "partitioning fractions": ("r_soil_frac", "r_gw_frac", "q_surf_frac"),
    "snow": ("snow_acc", "snow_melt"),
}
VARIABLE_NAMES = {
    "sm_max": "SM_max, soil capacity", "tws": "TWS", "tws_anomaly": "TWS anomaly",
    "sm": "soil moisture", "gw": "groundwater", "swe": "snow water equivalent",
    "Ei": "interception evaporation", "Es": "soil evaporation", "T": "transpiration",
    "ET": "evapotranspiration", "r_soil": "soil recharge", "r_gw": "groundwater recharge",
    "q_surf": "surface runoff", "q_base": "baseflow", "q_total": "total runoff",
    "r_soil_frac": "fraction of input to soil", "r_gw_frac": "fraction of input to GW",
    "q_surf_frac": "fraction of input to surface runoff", "snow_acc": "snowfall",
    "snow_melt": "snowmelt", "baseflow_index": "baseflow index",
    "transpiration_fraction": "T / ET",
}
EQUIFINALITY_TERMS = {"phase": OKABE_ITO["blue"], "bias": OKABE_ITO["orange"],
                      "variance": OKABE_ITO["green"]}


@styled
def plot_equifinality(table: xr.Dataset):
    """Fig. 8: (a) the equifinality index per variable on a log scale, (b) its terms.

    The variables are grouped as :data:`EQUIFINALITY_GROUPS` (others last) and named by
    :data:`VARIABLE_NAMES`. (a) spans orders of magnitude (SWE 0.003, the fractions 30),
    hence the log axis; (b) gives the share of the phase, bias and variance terms in
    each total. A total of 0 (members identical, e.g. no snow) is written as "0".
    """
    plt = _plt()
    names = [str(v) for v in table["variable"].values]
    groups = {g: [v for v in vs if v in names] for g, vs in EQUIFINALITY_GROUPS.items()}
    grouped = {v for vs in groups.values() for v in vs}
    groups["other"] = [v for v in names if v not in grouped]
    rows: list[tuple[str, str | None]] = []  # (label, variable or None for a group header)
    for group, variables in groups.items():
        if variables:
            rows.append((group, None))
            rows += [(VARIABLE_NAMES.get(v, v), v) for v in variables]
    y = np.arange(len(rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 0.26 * len(rows) + 1.6), sharey=True,
                               gridspec_kw={"width_ratios": [1.3, 1]}, layout="constrained")
    totals = {}
    for i, (_, v) in enumerate(rows):
        if v is None:
            continue
        terms = {t: float(table[t].sel(variable=v)) for t in EQUIFINALITY_TERMS}
        terms = {t: x if np.isfinite(x) else 0.0 for t, x in terms.items()}
        total = sum(terms.values())
        totals[i] = total
        left = 0.0
        for t, color in EQUIFINALITY_TERMS.items():
            share = terms[t] / total if total > 0 else 0.0
            b.barh(i, share, left=left, color=color, height=0.7,
                   label=f"{t} term" if i == 1 else None)
            left += share
    positive = [t for t in totals.values() if t > 0]
    top = max(positive, default=1.0)
    # four decades below the largest index are enough to read; smaller ones are annotated
    floor = max(min(positive, default=top) / 3, top * 1e-4)
    for i, total in totals.items():
        if total > floor:
            a.barh(i, total - floor, left=floor, color="0.35", height=0.7)
        a.annotate(f"{total:.2g}" if total > 0 else "0", (max(total, floor), i),
                   xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    a.set_xscale("log")
    a.set_xlim(floor, top * 4)
    a.set_yticks(y, [label for label, _ in rows])
    for tick, (_, v) in zip(a.get_yticklabels(), rows, strict=True):
        if v is None:
            tick.set_fontweight("bold")
    a.invert_yaxis()
    a.set_xlabel("equifinality index (pair MSE / pair mean variance) [–], log scale")
    a.set_title("(a) equifinality across members")
    b.set_xlim(0, 1)
    b.set_xlabel("share of the index [–]")
    b.set_title("(b) phase, bias and variance terms")
    handles, labels = b.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    for ax in (a, b):
        for i, (_, v) in enumerate(rows):
            if v is None and i:
                ax.axhline(i - 0.5, color="0.8", lw=0.6)
    pairs = table.attrs.get("pairs")
    fig.suptitle("Equifinality across members" + (f", mean over {pairs} pairs" if pairs
                                                    else ""))
    return fig


@styled
def plot_state_spread(spread: xr.Dataset):
    """Fig. 7: (a) anomaly bands, (b) range of means, (c) TWS mean vs SM mean per member."""
    plt = _plt()
    import matplotlib.dates as mdates

    states = [str(s) for s in spread["state"].values]
    fig = plt.figure(figsize=(13, 2.0 + 1.5 * len(states)), layout="constrained")
    grid = fig.add_gridspec(len(states), 3, width_ratios=[3.0, 1.2, 1.5])
    time = spread["time"].values
    band, line = OKABE_ITO["sky"], OKABE_ITO["blue"]
    for i, s in enumerate(states):
        ax = fig.add_subplot(grid[i, 0])
        a = spread["anomaly"].sel(state=s)
        ax.fill_between(time, a.min("member"), a.max("member"), color=band, lw=0,
                        alpha=0.6, label="range across members")
        ax.plot(time, a.mean("member"), color=line, lw=0.8, label="mean over members")
        ax.set_ylabel(f"{STATE_LABELS.get(s, s)} anomaly [mm]")
        locator = mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if i == 0:
            ax.set_title("(a) anomalies of the test-cell mean (state − time mean)")
            # below the figure: inside, it would hide the SWE peaks
            fig.legend(*ax.get_legend_handles_labels(), loc="outside lower left", ncol=2,
                       frameon=False)
        if i < len(states) - 1:
            ax.tick_params(labelbottom=False)
    ax = fig.add_subplot(grid[:, 1])
    mean = spread["mean"]
    x = np.arange(len(states))
    mid, lo, hi = mean.mean("member").values, mean.min("member").values, mean.max(
        "member").values
    ax.errorbar(x, mid, yerr=[mid - lo, hi - mid], fmt="o", color="k", capsize=6,
                label="mean, min–max")
    ax.set_xticks(x, [STATE_LABELS.get(s, s) for s in states])
    ax.set_xlabel("state")
    ax.set_ylabel("time mean of the state [mm]")
    ax.set_title("(b) time means over members")
    ax.legend(loc="upper left", frameon=False)
    ax = fig.add_subplot(grid[:, 2])
    if {"sm", "tws"} <= set(states):
        sm, tws = mean.sel(state="sm").values, mean.sel(state="tws").values
        gw = mean.sel(state="gw").values if "gw" in states else None
        pts = ax.scatter(sm, tws, c=gw, cmap="viridis", s=30, edgecolor="k", lw=0.5,
                         label="one member")
        if gw is not None:
            fig.colorbar(pts, ax=ax, label="GW time mean [mm]")
        slope = spread.attrs.get("sm_tws_slope")
        title = "(c) TWS against SM, per member"
        if slope is not None and np.isfinite(slope):
            xs = np.linspace(sm.min(), sm.max(), 2)
            ax.plot(xs, spread.attrs["sm_tws_intercept"] + slope * xs, color="0.3",
                    label=f"least squares, r = {spread.attrs['sm_tws_r']:.2f}")
        ax.set_title(title)
        ax.set_xlabel("SM time mean [mm]")
        ax.set_ylabel("TWS time mean [mm]")
        ax.legend(loc="upper left", frameon=False)
    else:
        ax.set_visible(False)
    fig.suptitle("Spread of the storages across members (test cells)")
    return fig
