"""The synthetic twin: a global store in the H2MV schema with known true parameters.

A plausible land mask and climate (temperature and radiation from latitude and season,
precipitation with wet and dry spells, an ITCZ that migrates with the seasons so that the
outer tropics get monsoon rains, dry subtropics, snowy high latitudes), smooth static
features, a hidden true SM_max and true α / β defined as known functions of the static
features and the meteorology, and the process layer run with them. Constraints come from
observation operators: monthly means of ET, runoff and fAPAR, monthly TWS with noise,
daily SWE only where a snow product exists (north of 35° N) and saturating, all with NaN
gaps. The truth goes into the store's ``truth`` group.

Everything is computed for land cells only and scattered onto the grid (NaN over the
ocean). All randomness comes from one ``numpy.random.Generator`` seeded by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import dask.array
import numpy as np
import pandas as pd
import torch
import xarray as xr

from h2mv_hybrid.data.gridding import scatter
from h2mv_hybrid.data.schema import annotate, month_starts
from h2mv_hybrid.data.store import TILE, write_store
from h2mv_hybrid.sites import wet_spells
from process_layers import FLUX_METADATA, FLUX_NAMES, h2mv
from process_layers import soil_layers as layers
from process_layers.constants import ZERO_CELSIUS_IN_KELVIN
from process_layers.parameters import ALPHA_NAMES, BY_NAME

FEATURES: tuple[str, ...] = (
    "elevation", "slope", "sand", "silt", "clay", "soil_depth",
    "forest", "grassland", "cropland", "bare", "wetland", "albedo",
)
#: Dimension order of the twin's variables.
ORDER = ("time", "month", "layer", "feature", "lat", "lon")
#: True global constants of the twin.
TRUE_BETA = {"snow": 0.9, "baseflow": 0.02}
#: SWE products saturate: observed SWE is capped here (mm); only cells north of this
#: latitude (degrees) have a snow product at all.
SWE_SATURATION_MM = 200.0
SWE_PRODUCT_MIN_LAT = 35.0
#: mm °C⁻¹ day⁻¹: the low end of degree-day factors, used to tell glaciated cells.
GLACIER_MELT_FACTOR = 1.5
#: Continents as ellipses (centre lat, centre lon, radius lat, radius lon), degrees.
CONTINENTS = (
    (45, -100, 20, 32), (15, -90, 8, 12), (-15, -60, 24, 16), (52, 15, 12, 26),
    (48, 90, 20, 55), (22, 78, 10, 9), (12, 103, 10, 9), (5, 20, 30, 21), (24, 45, 8, 11),
    (-25, 135, 11, 18), (65, -45, 0, 0),
)


@dataclass(frozen=True)
class TwinConfig:
    """Settings of the twin generator (see :func:`synthesize`)."""

    res: float = 2.0
    years: str = "2001-2010"
    seed: int = 0
    noise: float = 0.1
    gap_fraction: float = 0.05
    spinup_years: int = 3


def parse_years(years: str) -> tuple[int, int]:
    """'2001-2010' → (2001, 2010); a single year is accepted."""
    parts = str(years).split("-")
    try:
        first, last = int(parts[0]), int(parts[-1])
    except ValueError as err:
        raise ValueError(f"years: expected 'YYYY-YYYY', found {years!r}") from err
    if len(parts) > 2 or last < first:
        raise ValueError(f"years: expected 'YYYY-YYYY' with first ≤ last, found {years!r}")
    return first, last


def _smooth(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, waves: int = 8,
            max_k: float = 4.0) -> np.ndarray:
    """A smooth random field on the sphere (sum of long waves), zero mean and unit std."""
    x = np.zeros_like(lat, dtype=float)
    la, lo = np.radians(lat), np.radians(lon)
    for _ in range(waves):
        k, m = rng.uniform(0.5, max_k, 2)
        x += np.cos(k * la + rng.uniform(0, 2 * np.pi)) * np.cos(m * lo + rng.uniform(0, 2 * np.pi))
    return (x - x.mean()) / (x.std() + 1e-12)


def land_mask(lat2d: np.ndarray, lon2d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Continents as perturbed ellipses; no Antarctica (H2MV models 60° S–90° N)."""
    wobble = 0.35 * _smooth(rng, lat2d, lon2d, waves=12, max_k=8.0)
    land = np.zeros(lat2d.shape, bool)
    for clat, clon, rlat, rlon in CONTINENTS:
        if rlat == 0:
            continue
        dlon = (lon2d - clon + 180.0) % 360.0 - 180.0
        land |= ((lat2d - clat) / rlat) ** 2 + (dlon / rlon) ** 2 + wobble < 1.0
    return land & (lat2d > -60.0)


def _running_mean(x: np.ndarray, days: int) -> np.ndarray:
    """Trailing mean over ``days`` along the last axis (the first days use what exists)."""
    c = np.cumsum(x, axis=-1)
    out = c.copy()
    out[..., days:] = c[..., days:] - c[..., :-days]
    n = np.minimum(np.arange(1, x.shape[-1] + 1), days)
    return out / n


def _static(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray,
            aridity: np.ndarray) -> np.ndarray:
    """Static features [feature, cells] (fractions in [0, 1], elevation in km)."""
    f = lambda: _smooth(rng, lat, lon)  # noqa: E731
    softmax = lambda z: np.exp(z) / np.exp(z).sum(0)  # noqa: E731
    elevation = 1.2 * np.exp(0.6 * f()) - 0.5
    slope = np.clip(0.3 * elevation + 0.1 * f(), 0, None)
    texture = softmax(np.stack([f(), 0.5 * f(), f()]))
    depth = 1.0 / (1.0 + np.exp(-(f() - 0.8 * slope)))
    # Vegetation follows wetness: forest where humid, bare land where arid.
    cover = softmax(np.stack([2.5 * (1 - aridity) + 0.5 * f(), 0.5 + 0.5 * f(),
                              0.2 + 0.5 * f(), 3.0 * aridity - 1.5 + 0.3 * f()]))
    wetland = 0.15 / (1.0 + np.exp(-(2 * f() - 3)))
    albedo = 0.12 + 0.2 * cover[3] + 0.02 * f()
    return np.stack([elevation, slope, *texture, depth, *cover, wetland, albedo])


def true_parameters(static: np.ndarray, tair_c: np.ndarray, prec: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The twin's hidden truth: α [cells, time] and SM_max [cells] as known functions.

    SM_max grows with soil depth and clay and shrinks with sand; the melt factor falls
    under forest; interception capacity grows with forest; soil-evaporation conductance
    follows recent rain; transpiration is cold-stressed; infiltration favours sandy
    soils; fAPAR greens up with warmth and recent rain, capped by bare ground.
    """
    feat = dict(zip(FEATURES, static, strict=True))
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    z = lambda x: (x - x.mean()) / (x.std() + 1e-12)  # noqa: E731
    soil = 2.0 * z(feat["soil_depth"]) + z(feat["clay"]) - 0.7 * z(feat["sand"])
    sm_max = 40.0 + 460.0 * sig(soil)
    col = lambda x: x[:, None]  # noqa: E731
    t30 = _running_mean(tair_c, 30)
    p30 = _running_mean(prec, 30)
    p7 = _running_mean(prec, 7)
    ones = np.ones_like(tair_c)
    alpha = {
        "snow_melt": col(3.5 - 2.0 * feat["forest"]) * ones,
        "Ei": col(0.4 + 2.5 * feat["forest"] + 0.5 * feat["cropland"]) * ones,
        "Es": 0.1 + 0.6 * (1.0 - np.exp(-p7 / 3.0)),
        "T": 0.25 + 0.7 * sig((tair_c - 5.0) / 4.0),
        "r_soil": col(0.55 + 0.4 * sig(2.0 * z(feat["sand"]) - z(feat["clay"]))) * ones,
        "r_gw": col(0.15 + 0.5 * sig(z(feat["sand"]) + z(feat["slope"]))) * ones,
        "fapar": 0.04 + col(0.85 * (1.0 - feat["bare"])) * sig((t30 - 6.0) / 4.0)
        * (1.0 - np.exp(-p30 / 1.5)),
    }
    return {k: v.astype(np.float32) for k, v in alpha.items()}, sm_max


def _climate(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, elevation_km: np.ndarray,
             time: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Daily forcing for land cells: rn (W m⁻²), prec (mm day⁻¹), tair (K), [cells, time]."""
    n, t = lat.size, len(time)
    doy = time.day_of_year.to_numpy()[None, :]
    la = lat[:, None]
    north = np.where(la >= 0, 1.0, -1.0)
    season = np.cos(2 * np.pi * (doy - 196) / 365.25) * north  # +1 in local summer
    abs_lat = np.abs(la)
    t_mean = 27.0 - 0.6 * np.clip(abs_lat - 12.0, 0, None) - 6.5 * elevation_km[:, None]
    t_amp = 1.5 + 0.33 * abs_lat
    noise = np.empty((n, t))
    noise[:, 0] = rng.standard_normal(n)
    for i in range(1, t):  # AR(1) weather anomalies (~3 days memory)
        noise[:, i] = 0.7 * noise[:, i - 1] + 0.714 * rng.standard_normal(n)
    tair_c = t_mean + t_amp * season + 2.5 * noise
    # Precipitation climatology: a migrating ITCZ, mid-latitude storm tracks, dry subtropics.
    itcz = 8.0 * np.cos(2 * np.pi * (doy - 200) / 365.25)
    p_clim = (9.0 * np.exp(-0.5 * ((la - itcz) / 7.0) ** 2)
              + 2.6 * np.exp(-0.5 * ((abs_lat - 50.0) / 12.0) ** 2) + 0.2)
    p_clim = p_clim * np.exp(0.45 * _smooth(rng, lat, lon))[:, None]
    p_wet = np.clip(0.1 + 0.6 * p_clim / (p_clim + 3.0), 0.03, 0.85)
    wet = wet_spells(rng, p_wet)
    prec = np.where(wet, p_clim / p_wet * rng.gamma(0.8, 1 / 0.8, (n, t)), 0.0)
    rn = (35.0 + 115.0 * np.cos(np.radians(la)) + 85.0 * np.sin(np.radians(abs_lat)) * season
          + 12.0 * rng.standard_normal((n, t)) - np.where(wet, 25.0, 0.0))
    return rn, prec, tair_c + ZERO_CELSIUS_IN_KELVIN


#: Stefan–Boltzmann constant, W m⁻² K⁻⁴.
STEFAN_BOLTZMANN = 5.670374419e-8
#: Emissivity of the land surface, –.
SURFACE_EMISSIVITY = 0.97
#: Sea-level pressure (Pa) and the scale height of the atmosphere (km), for psurf.
SEA_LEVEL_PRESSURE = 101325.0
SCALE_HEIGHT_KM = 8.434


def saturation_specific_humidity(tair: np.ndarray, psurf: np.ndarray) -> np.ndarray:
    """q_sat (kg kg⁻¹) from air temperature (K) and pressure (Pa): Bolton (1980) e_sat."""
    t_c = tair - ZERO_CELSIUS_IN_KELVIN
    e_sat = 611.2 * np.exp(17.67 * t_c / (t_c + 243.5))
    return 0.622 * e_sat / (psurf - 0.378 * e_sat)


def _extra_forcing(rng: np.random.Generator, lat: np.ndarray, rn: np.ndarray,
                   prec: np.ndarray, tair: np.ndarray, elevation_km: np.ndarray,
                   albedo: np.ndarray, aridity: np.ndarray) -> dict[str, np.ndarray]:
    """The other meteorology of the PHY-LSTM heads, consistent with rn and tair [cells, time].

    Radiation closes the surface energy budget exactly:
    rn = (1 − albedo) · sw_down + lw_down − ε σ T⁴, with an atmospheric emissivity that
    rises on wet (cloudy) days; humidity follows temperature through saturation and a
    relative humidity set by aridity and rain; pressure follows elevation (scale height
    8.4 km); wind is an AR(1) gamma-like series, windier at mid-latitudes.
    """
    n, t = rn.shape
    wet = prec > 0
    lw_up = SURFACE_EMISSIVITY * STEFAN_BOLTZMANN * tair**4
    emissivity = 0.72 + 0.12 * wet + 0.02 * rng.standard_normal((n, t))
    lw_down = emissivity * STEFAN_BOLTZMANN * tair**4
    sw_down = np.clip((rn - lw_down + lw_up) / (1.0 - albedo[:, None]), 0.0, 550.0)
    lw_down = rn + lw_up - (1.0 - albedo[:, None]) * sw_down  # closes the budget exactly
    weather = np.empty((n, t))
    weather[:, 0] = rng.standard_normal(n)
    for i in range(1, t):
        weather[:, i] = 0.8 * weather[:, i - 1] + 0.6 * rng.standard_normal(n)
    psurf = SEA_LEVEL_PRESSURE * np.exp(-elevation_km[:, None] / SCALE_HEIGHT_KM) \
        + 400.0 * weather
    rh = np.clip(0.35 + 0.45 * (1.0 - aridity[:, None]) + 0.15 * wet
                 + 0.05 * rng.standard_normal((n, t)), 0.05, 1.0)
    q_air = rh * saturation_specific_humidity(tair, psurf)
    storm_tracks = np.exp(-0.5 * ((np.abs(lat[:, None]) - 50.0) / 15.0) ** 2)
    wind = np.clip(2.0 + 2.5 * storm_tracks + 1.2 * weather, 0.1, None)
    return {"sw_down": sw_down, "lw_down": lw_down, "q_air": q_air, "psurf": psurf,
            "wind": wind}


def layer_coords() -> dict[str, tuple[str, np.ndarray, dict[str, str]]]:
    """The ``layer`` axis of ``sm_layers``: index and depth bounds (m) of each layer."""
    top, bottom = (np.array(b) for b in zip(*layers.LAYER_BOUNDS_M, strict=True))
    return {
        "layer": ("layer", np.arange(1, len(top) + 1), {"long_name": "soil layer"}),
        "depth_top": ("layer", top, {"units": "m", "long_name": "depth of the layer top"}),
        "depth_bottom": ("layer", bottom,
                         {"units": "m", "long_name": "depth of the layer bottom"}),
    }


def residual_water_content(clay: np.ndarray) -> np.ndarray:
    """θ_r (m³ m⁻³) of the twin's soils: 0.01 + 0.15 · clay fraction."""
    return 0.01 + 0.15 * clay


def _monthly(x: np.ndarray, time: pd.DatetimeIndex) -> np.ndarray:
    """Monthly means along the last axis of [cells, time] → [cells, months]."""
    codes = np.asarray((time.year - time.year[0]) * 12 + time.month - time.month[0])
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return np.add.reduceat(x, starts, axis=1) / np.diff(np.r_[starts, len(codes)])[None, :]


def _observe(rng, truth: np.ndarray, noise: float, gaps: float, floor=None, cap=None) -> np.ndarray:
    """Observation operator: additive noise scaled to the variable's spread, NaN gaps."""
    obs = truth + noise * np.nanstd(truth) * rng.standard_normal(truth.shape)
    if floor is not None or cap is not None:
        obs = np.clip(obs, floor, cap)
    obs[rng.random(truth.shape) < gaps] = np.nan
    return obs


class _Land(NamedTuple):
    """The twin's grid, its modelled (land, unglaciated) cells and their climate."""

    lat: np.ndarray  # [lat], degrees
    lon: np.ndarray  # [lon], degrees
    mask: np.ndarray  # [lat, lon], modelled cells
    cells: np.ndarray  # [cells], flat index of each modelled cell
    clat: np.ndarray  # [cells], degrees
    time: pd.DatetimeIndex
    months: pd.DatetimeIndex
    elev: np.ndarray  # [cells], km above sea level
    rn: np.ndarray  # [cells, days], W m⁻²
    prec: np.ndarray  # [cells, days], mm day⁻¹
    tair: np.ndarray  # [cells, days], K
    static: np.ndarray  # [features, cells]
    aridity: np.ndarray  # [cells], 0–1

    def grid(self, x: np.ndarray) -> dask.array.Array:
        """Land cells [cells(, steps)] onto [lat, lon(, steps)], lazily, NaN off land.

        At 1° over ten years each gridded, ocean-padded array would take ~1 GB; scattered
        lazily, one chunk tile at a time, it never exists whole and the write streams.
        """
        return scatter(x, self.cells, self.mask.shape, (TILE, TILE))


def _land(cfg: TwinConfig, rng: np.random.Generator) -> _Land:
    """Grid, land mask, climate and static features (the first draws of ``rng``)."""
    first, last = parse_years(cfg.years)
    lat = np.arange(-90 + cfg.res / 2, 90, cfg.res)
    lon = np.arange(-180 + cfg.res / 2, 180, cfg.res)
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    mask = land_mask(lat2d, lon2d, rng)
    cells = np.nonzero(mask.ravel())[0]
    clat, clon = lat2d.ravel()[cells], lon2d.ravel()[cells]
    time = pd.date_range(f"{first}-01-01", f"{last}-12-31", freq="D")

    # Static features need aridity first (vegetation follows it): a rough climatology.
    elev = 1.2 * np.exp(0.6 * _smooth(np.random.default_rng(cfg.seed + 1), clat, clon)) - 0.5
    rn, prec, tair = _climate(rng, clat, clon, np.clip(elev, 0, None), time)
    # Glaciated cells are not modelled, as in H2MV: where a year's degree-days, even at a
    # low melt factor, cannot melt a year's snowfall, snow would pile up without bound.
    t_c = tair - ZERO_CELSIUS_IN_KELVIN
    degree_days = np.clip(t_c, 0, None).sum(axis=1)
    snowfall = np.where(t_c <= 0, prec, 0.0).sum(axis=1)
    keep = degree_days * GLACIER_MELT_FACTOR > snowfall
    mask.ravel()[cells[~keep]] = False
    cells, clat, clon, elev = cells[keep], clat[keep], clon[keep], elev[keep]
    rn, prec, tair = rn[keep], prec[keep], tair[keep]
    aridity = np.clip(rn.mean(1) * 0.0353 / (prec.mean(1) + 0.5) / 4.0, 0, 1)
    static = _static(rng, clat, clon, aridity)
    static[0] = np.clip(elev, 0, None)
    return _Land(lat, lon, mask, cells, clat, time, month_starts(time), elev, rn, prec, tair,
                 static, aridity)


def _true_run(cfg: TwinConfig, land: _Land, alpha: dict[str, np.ndarray], sm_max: np.ndarray
              ) -> tuple[h2mv.Fluxes, h2mv.States, np.ndarray]:
    """The process layer with the true parameters: ``(fluxes, initial states, θ of layers)``.

    Spin-up: the first year repeated until the stores settle, then the period.
    """
    t64 = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    forcing = {"rn": t64(land.rn), "prec": t64(land.prec), "tair": t64(land.tair)}
    alpha_t = {k: t64(v) for k, v in alpha.items()}
    static_t = {"sm_max": t64(sm_max)}
    beta_t = {k: torch.tensor(v) for k, v in TRUE_BETA.items()}
    year = slice(0, 365)
    states = None
    # The soil layers run on the bucket's own fluxes, in float64 so that they sum to the
    # bucket's SM to float32 precision over the whole period.
    sm_max64 = torch.as_tensor(sm_max, dtype=torch.float64)
    soil = torch.zeros(len(land.cells), len(layers.LAYER_BOUNDS_M), dtype=torch.float64)

    def run_layers(f: h2mv.Fluxes, start: torch.Tensor) -> torch.Tensor:
        return layers.simulate_layers(f.Es.double(), f.T.double(), f.r_soil.double(),
                                      sm_max64, start)

    for _ in range(cfg.spinup_years):
        f = h2mv.simulate({k: v[:, year] for k, v in forcing.items()},
                          {k: v[:, year] for k, v in alpha_t.items()}, static_t, beta_t, states)
        states = f.final_states()
        soil = run_layers(f, soil)[:, -1]
    initial = states if states is not None else h2mv.initial_states(len(land.cells))
    fluxes = h2mv.simulate(forcing, alpha_t, static_t, beta_t, initial)
    soil_mm = run_layers(fluxes, soil)  # [cells, time, layer]
    theta = layers.volumetric(
        soil_mm, torch.as_tensor(residual_water_content(land.static[FEATURES.index("clay")]))
    ).numpy()
    return fluxes, initial, theta


def _store_dataset(cfg: TwinConfig, land: _Land, fluxes: h2mv.Fluxes,
                   fapar: np.ndarray, theta: np.ndarray, extra: dict[str, np.ndarray]
                   ) -> xr.Dataset:
    """The store: forcing, static features and the observation operators' constraints."""
    time, months, grid = land.time, land.months, land.grid
    flux = {k: fluxes[k].numpy().astype(np.float64) for k in ("ET", "q_total", "tws", "swe")}
    obs_rng = np.random.default_rng(cfg.seed + 2)
    et_m = _monthly(flux["ET"], time)
    q_m = _monthly(flux["q_total"], time)
    fapar_m = _monthly(fapar, time)
    tws_m = _monthly(flux["tws"], time)
    tws_obs = _observe(obs_rng, tws_m, cfg.noise, cfg.gap_fraction)
    mid = len(months) // 2
    tws_obs[:, mid:mid + 6] = np.nan  # a half-year mission gap, as between GRACE missions
    swe_obs = _observe(obs_rng, flux["swe"], cfg.noise, 2 * cfg.gap_fraction, 0.0,
                       SWE_SATURATION_MM)
    swe_obs[land.clat < SWE_PRODUCT_MIN_LAT] = np.nan

    spatial = ("lat", "lon")
    features = np.array(FEATURES)
    coords = {"time": time, "month": months, "lat": land.lat, "lon": land.lon,
              "feature": features}
    data = {
        "rn": ((*spatial, "time"), grid(land.rn)),
        "prec": ((*spatial, "time"), grid(land.prec)),
        "tair": ((*spatial, "time"), grid(land.tair)),
        "static": ((*spatial, "feature"), grid(land.static.T)),
        "mask": (spatial, land.mask),
        "et": ((*spatial, "month"), grid(_observe(obs_rng, et_m, cfg.noise, cfg.gap_fraction))),
        "q": ((*spatial, "month"),
              grid(_observe(obs_rng, q_m, cfg.noise, cfg.gap_fraction, floor=0.0))),
        "fapar": ((*spatial, "month"),
                  grid(_observe(obs_rng, fapar_m, cfg.noise, cfg.gap_fraction, 0.0, 1.0))),
        "tws": ((*spatial, "month"), grid(tws_obs)),
        "swe": ((*spatial, "time"), grid(swe_obs)),
        # What the PHY-LSTM heads read (ERA5-Land-like: complete daily model fields).
        **{k: ((*spatial, "time"), grid(v)) for k, v in extra.items()},
        "sm_layers": ((*spatial, "time", "layer"), grid(theta.astype(np.float32))),
        "et_daily": ((*spatial, "time"), grid(fluxes["ET"].numpy())),
        "q_surf_daily": ((*spatial, "time"), grid(fluxes["q_surf"].numpy())),
        "swe_daily": ((*spatial, "time"), grid(fluxes["swe"].numpy())),
    }
    coords.update(layer_coords())
    store = xr.Dataset(data, coords=coords).transpose(*ORDER, missing_dims="ignore")
    for name in store.data_vars:
        annotate(store[name], name)
    store.attrs.update(
        title="H2MV synthetic twin", source="h2mv_hybrid.data.synth",
        twin_res=cfg.res, twin_years=cfg.years, twin_seed=cfg.seed, twin_noise=cfg.noise,
        swe_saturation_mm=SWE_SATURATION_MM,
    )
    return store


def _truth_dataset(land: _Land, alpha: dict[str, np.ndarray], sm_max: np.ndarray,
                   fluxes: h2mv.Fluxes, initial: h2mv.States) -> xr.Dataset:
    """The ``truth`` group: SM_max, every α and flux, the initial states, β."""
    spatial, grid = ("lat", "lon"), land.grid
    tdata = {"sm_max": (spatial, grid(sm_max))}
    for k in ALPHA_NAMES:
        tdata[f"alpha_{k}"] = ((*spatial, "time"), grid(alpha[k]))
    for k in FLUX_NAMES:
        tdata[k] = ((*spatial, "time"), grid(fluxes[k].numpy()))
    for k in ("swe", "sm", "gw"):
        tdata[f"{k}_initial"] = (spatial, grid(initial[k].numpy()))
    truth = xr.Dataset(tdata, coords={"time": land.time, "lat": land.lat, "lon": land.lon})
    truth = truth.transpose(*ORDER, missing_dims="ignore")
    truth.attrs.update({f"beta_{k}": v for k, v in TRUE_BETA.items()})
    truth["sm_max"].attrs.update(units="mm", long_name="true SM_max")
    for k in ALPHA_NAMES:
        coef = BY_NAME[("alpha", k)]
        truth[f"alpha_{k}"].attrs.update(units=coef.unit, long_name=f"true {coef.symbol}")
    for k in FLUX_NAMES:
        unit, long_name, _ = FLUX_METADATA[k]
        truth[k].attrs.update(units=unit, long_name=f"true {long_name}")
    for k in ("swe", "sm", "gw"):
        truth[f"{k}_initial"].attrs.update(units="mm", long_name=f"true {k} before the period")
    return truth


def synthesize(config: TwinConfig | None = None) -> tuple[xr.Dataset, xr.Dataset]:
    """Build the twin in memory: ``(store, truth)`` as xarray Datasets on the same grid."""
    cfg = config or TwinConfig()
    if not 0.25 <= cfg.res <= 10:
        raise ValueError(f"res: expected a grid spacing in [0.25, 10] degrees, found {cfg.res}")
    rng = np.random.default_rng(cfg.seed)
    land = _land(cfg, rng)
    tair_c = land.tair - ZERO_CELSIUS_IN_KELVIN
    alpha, sm_max = true_parameters(land.static, tair_c, land.prec)
    fluxes, initial, theta = _true_run(cfg, land, alpha, sm_max)
    elev = np.clip(land.elev, 0, None)
    extra = _extra_forcing(rng, land.clat, land.rn, land.prec, land.tair, elev,
                           land.static[FEATURES.index("albedo")], land.aridity)
    store = _store_dataset(cfg, land, fluxes, alpha["fapar"], theta, extra)
    return store, _truth_dataset(land, alpha, sm_max, fluxes, initial)


def synth(
    out: str,
    res: float = 2.0,
    years: str = "2001-2010",
    seed: int = 0,
    noise: float = 0.1,
    gap_fraction: float = 0.05,
    overwrite: bool = False,
) -> str:
    """Write a synthetic twin store (the ``h2mv synth`` command).

    Args:
        out: path of the zarr store to write.
        res: grid spacing in degrees.
        years: period, 'YYYY-YYYY'.
        seed: seed of every random draw (the same seed gives the same store).
        noise: observation noise, as a fraction of each variable's spread.
        gap_fraction: share of observations removed as NaN gaps.
        overwrite: replace an existing store at ``out``.
    """
    cfg = TwinConfig(res=res, years=years, seed=seed, noise=noise, gap_fraction=gap_fraction)
    store, truth = synthesize(cfg)
    path = write_store(store, truth, out, overwrite=overwrite)
    n = int(store["mask"].sum())
    print(f"twin store: {path} ({n} land cells at {res}°, {store.sizes['time']} days, "
          f"{store.sizes['month']} months, {store.sizes['feature']} static features)")
    return str(path)
