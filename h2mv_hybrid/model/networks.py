"""The networks of H2MV (paper §2.2.2–2.2.3) and the hybrid model that drives the bucket.

- Static module: normalized static features → hidden layer → compressed code (leaky
  ReLU), and code → SM_max (mm), activated as the coefficient table says
  (:mod:`process_layers.parameters`: floor + scale · softplus).
- Dynamic module: an LSTM fed each day the normalized forcing, the static code and (in
  the paper's configuration) the previous day's storages and fAPAR; a linear layer
  emits the α and fAPAR, activated into their bounds by the same table.
- Global constants β (snow, baseflow): learned directly, activated by the table (sigmoid);
  with ``basin_baseflow`` the baseflow recession β_gw is one per cell, from the static
  code (catchments differ in their recession as much as in their storage capacity);
  with ``nonlinear_baseflow`` the groundwater outflow is nonlinear (A21′ of
  :func:`process_layers.runoff.baseflow`), its half-rate storage K_gw per cell.
- Optional routing to a catchment's outlet (``routing_days``): a gamma unit hydrograph
  per cell, its shape and scale from the static code (:mod:`process_layers.routing`),
  adds the outputs ``q_routed`` and ``routing_store``.
- Optional per-basin forcing corrections from the static code (``basin_precip_factor``,
  ``basin_temperature_offset``): the bucket reads c_P · prec and T_air + δ_T; the LSTM
  reads the forcing as given.
- Optional elevation bands (``elevation_bands``): the bucket runs K times per basin, at
  the temperatures of K equal-area bands spread by σ_T (per basin, from the static code),
  each band with its own storages; the basin's fluxes and storages are the band means.

Two configurations: ``state_feedback=True`` (the paper's: one LSTM cell step and one
bucket step per day, storages fed back) and ``state_feedback=False`` (one whole-sequence
``nn.LSTM``, then the fused :func:`process_layers.h2mv.simulate`): much faster, but the
LSTM cannot react to the model's own storages, only to the forcing history. How either
runs over time is a scan (:mod:`h2mv_hybrid.model.scans`).

Every setting of the networks is a field of :class:`HybridSettings`, the one record the
LightningModule (``model.init_args.network``) and :class:`HybridH2MV` share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from h2mv_hybrid.model.scans import (
    Carry,
    Drivers,
    activate_alpha,
    choose_scan,
    physics_dtype,
)
from h2mv_hybrid.options import check_choice
from process_layers import FLUX_NAMES, Alpha, Beta, States, bands, h2mv, routing, runoff
from process_layers.parameters import ALPHA_NAMES, BY_NAME, names

#: Daily outputs of the hybrid model: every flux and storage of the bucket, and fAPAR.
OUTPUT_NAMES: tuple[str, ...] = (*FLUX_NAMES, "fapar")
#: Daily outputs added by routing: runoff at the outlet (mm day⁻¹), water in transit (mm).
ROUTING_OUTPUTS: tuple[str, ...] = ("q_routed", "routing_store")
#: Initial unit hydrograph: shape a and scale θ (days), a mean delay of about two days.
ROUTING_INIT = {"route_shape": 2.0, "route_scale": 1.0}
#: The forcing corrections' neutral values, where they start.
NO_CORRECTION = {"precip_factor": 1.0, "temperature_offset": 0.0}
#: Where K_gw of the nonlinear groundwater outflow starts, mm: about the storage that a
#: baseflow of 0.5 mm day⁻¹ needs at β_gw = 0.05, so the rate starts halfway between the
#: quadratic and the linear regimes.
BASEFLOW_HALF_INIT = 20.0
#: Where the groundwater export f_ex starts: a twentieth of the outflow leaves the basin,
#: near the paper's none, and off the sigmoid's flat end so that it can move either way.
GW_EXPORT_INIT = 0.05
#: The daily output a groundwater export adds: the water that leaves the basin (mm day⁻¹).
EXCHANGE_OUTPUTS: tuple[str, ...] = ("q_export",)
#: Where the spread of temperature over elevation bands starts, °C. Not at 0: with bands
#: placed symmetrically around the basin mean, the first-order gradient of any band mean
#: with respect to σ_T vanishes there, and σ_T could not leave it.
SPREAD_INIT = 1.0
#: Most elevation bands a basin may have.
MAX_BANDS = 20
ChunkMode = Literal["checkpoint", "truncate"]
#: ``time_chunk: auto``: spans longer than this many days run in chunks of
#: :data:`AUTO_CHUNK_DAYS` (a year: one chunk of the fused state-feedback tape at 512 cells
#: is ~0.5 GiB; a training window of a year plus its warm-up stays in one piece).
AUTO_CHUNK_AFTER = 730
AUTO_CHUNK_DAYS = 365
FeedbackBackend = Literal["auto", "fused", "loop"]
LSTMBackend = Literal["auto", "scan", "torch"]


@dataclass(frozen=True)
class HybridSettings:
    """The hybrid's networks and how its recurrence runs over time.

    Args:
        static_hidden: width of the static module's hidden layer (paper: 150).
        code_size: size of the static code (paper: 12).
        lstm_hidden: LSTM hidden size (paper: 100).
        state_feedback: the paper's configuration (storages fed back to the LSTM daily);
            False: one whole-sequence LSTM, then the fused bucket (faster; see docs).
        sm_max_floor: smallest SM_max, mm (None: the coefficient table's, 10 mm).
        sm_max_scale: scale of the SM_max softplus, mm (None: the table's, 100 mm).
        beta_init: initial β (snow, baseflow), each in (0, 1) (default 0.9, 0.05).
        state_scale: storages enter the LSTM as log1p(storage / state_scale), mm.
        time_chunk: days per chunk of gradient checkpointing / truncation; None: off;
            ``auto`` (the default): chunks of :data:`AUTO_CHUNK_DAYS` days for spans longer
            than :data:`AUTO_CHUNK_AFTER` days, none for shorter ones, so
            that a training step's memory is bounded whatever the sequence length. Both
            configurations chunk: the state-feedback recurrence, and the decoupled
            configuration's LSTM and head (its bucket scan keeps no per-day tape).
        chunk_mode: ``checkpoint`` (exact gradients, recompute each chunk in backward) or
            ``truncate`` (truncated back-propagation: carried states are detached).
        feedback_backend: the state-feedback recurrence as one fused op with a hand-written
            backward (``fused``: numba on the CPU without autocast, Triton on a CUDA GPU,
            where the recurrence runs in float32 under autocast too), day by day with
            autograd (``loop``; any device and precision), or ``auto`` (fused where it can
            run, else loop).
        lstm_backend: the decoupled configuration's whole-sequence LSTM as the project's
            own op (``scan``: :mod:`h2mv_hybrid.model.lstm_scan`, the CPU in float32 or
            float64 without autocast), as ``nn.LSTM`` (``torch``: oneDNN on the CPU, cuDNN
            on a GPU), or ``auto`` (scan where it can run, else torch). Same parameters
            either way: checkpoints move between them.
        routing_days: K, the length of the unit hydrograph that routes the bucket's runoff
            to the outlet (``q_routed``), days; None: no routing (gridded stores, where
            runoff is compared monthly).
        basin_baseflow: β_gw per cell from the static code (a catchment's recession
            constant, as every conceptual model calibrates one per basin) instead of the
            paper's global constant.
        nonlinear_baseflow: the groundwater outflow is q_base = β_gw GW² / (GW + K_gw)
            (A21′, :func:`process_layers.runoff.baseflow`) with K_gw (mm) per cell from
            the static code, instead of the paper's linear β_gw GW: a recession that is
            fast in a full store and slow in a draining one, as real catchments'
            storage–discharge relations are (Kirchner 2009).
        basin_gw_export: a share f_ex ∈ [0, 0.95] of the groundwater outflow leaves the
            basin (``q_export``) instead of reaching its river, f_ex per cell from the
            static code (:func:`process_layers.runoff.groundwater_export`: GR4J's
            groundwater exchange, SAC-SMA's deep recharge), so that a basin that loses
            water to its neighbours or a deep aquifer need not scale down its storms'
            precipitation to match its volume. ``q_base`` and ``q_total`` are what reaches
            the river; the balance closes with ``q_export``.
        basin_precip_factor: the bucket's precipitation is c_P · prec, c_P ∈ [0.5, 2] per
            cell from the static code (gauge under-catch, a basin mean that misses its
            wettest part); the water balance is that of the corrected precipitation.
        basin_temperature_offset: the bucket's air temperature is T_air + δ_T, δ_T ∈
            [−4, 4] °C per cell from the static code: where a basin-mean temperature turns
            precipitation to snow and melts it (HBV's threshold temperature TT). Its
            gradient comes from melt; the rain/snow switch itself is a step.
        elevation_bands: K ≥ 1. With K > 1 the bucket runs once per equal-area band of
            a basin, at T_air + δ_T + σ_T · z_k (z_k: the band means of a standard normal
            temperature distribution, scaled to unit spread; σ_T ∈ [0, 6] °C per cell
            from the static code), with the basin's precipitation and energy and its
            own snow, soil and groundwater stores; every flux, fraction and storage the
            model reports is the mean over the bands (the water balance closes on it).
            This is how HBV and CemaNeige melt a mountain basin out from its low to its
            high parts, without the hypsometry: the spread is learned.
    """

    static_hidden: int = 150
    code_size: int = 12
    lstm_hidden: int = 100
    state_feedback: bool = True
    sm_max_floor: float | None = None
    sm_max_scale: float | None = None
    beta_init: dict[str, float] | None = None
    state_scale: float = 10.0
    # jsonargparse 4.53 turns a null given for a union with a Literal or str inside the
    # model's init_args into the string 'None': __post_init__ reads it back as None and
    # refuses any other string than 'auto'
    time_chunk: int | str | None = "auto"
    chunk_mode: ChunkMode = "checkpoint"
    feedback_backend: FeedbackBackend = "auto"
    lstm_backend: LSTMBackend = "auto"
    routing_days: int | None = None
    basin_baseflow: bool = False
    nonlinear_baseflow: bool = False
    basin_gw_export: bool = False
    basin_precip_factor: bool = False
    basin_temperature_offset: bool = False
    elevation_bands: int = 1

    def __post_init__(self):
        check_choice("feedback_backend", self.feedback_backend, FeedbackBackend)
        check_choice("lstm_backend", self.lstm_backend, LSTMBackend)
        check_choice("chunk_mode", self.chunk_mode, ChunkMode)
        if self.routing_days is not None and not 1 <= self.routing_days <= 365:
            raise ValueError(f"routing_days: expected 1 … 365 days or None, found "
                             f"{self.routing_days}")
        if not (isinstance(self.elevation_bands, int)
                and 1 <= self.elevation_bands <= MAX_BANDS):
            raise ValueError(f"elevation_bands: expected an integer 1 … {MAX_BANDS}, found "
                             f"{self.elevation_bands!r}")
        if not self.state_scale > 0:
            raise ValueError(f"state_scale: expected > 0 mm (storages enter the LSTM as "
                             f"log1p(storage / state_scale)), found {self.state_scale}")
        if isinstance(self.time_chunk, str) and self.time_chunk.lower() in ("none", "null"):
            object.__setattr__(self, "time_chunk", None)
        if self.time_chunk is not None and self.time_chunk != "auto" and (
                isinstance(self.time_chunk, str) or self.time_chunk < 1):
            raise ValueError(f"time_chunk: expected ≥ 1 days, 'auto' or None, found "
                             f"{self.time_chunk!r}")
        for k, v in (self.beta_init or {}).items():
            if not 0 < v < 1:
                raise ValueError(f"beta_init[{k!r}]: expected a value in (0, 1), found {v}")

    def chunk_days(self, n_days: int) -> int | None:
        """Days per chunk for a span of ``n_days`` (None: one piece); see ``time_chunk``."""
        if self.time_chunk != "auto":
            return self.time_chunk
        return AUTO_CHUNK_DAYS if n_days > AUTO_CHUNK_AFTER else None


# Checkpoints keep the settings in their hyperparameters (plain data).
torch.serialization.add_safe_globals([HybridSettings])
#: The paper's networks (§2.2: static 150 → 12, LSTM 100, daily state feedback).
PAPER_NETWORK = HybridSettings()


class HybridOutput(NamedTuple):
    """Daily outputs [cells, days] by name (``OUTPUT_NAMES``), coefficients, final carry.

    With routing also the routing coefficients per cell (``route_shape``, ``route_scale``)
    and the runoff history that the next span of days starts from [cells, K − 1]; with
    forcing corrections their values per cell (``precip_factor``, ``temperature_offset``);
    with a groundwater export its share per cell (``exchange``: ``gw_export``).
    """

    daily: dict[str, Tensor]
    alpha: dict[str, Tensor]
    sm_max: Tensor
    beta: dict[str, Tensor]
    carry: Carry
    routing: dict[str, Tensor] | None = None
    history: Tensor | None = None
    corrections: dict[str, Tensor] | None = None
    exchange: dict[str, Tensor] | None = None


class StaticModule(nn.Module):
    """Static features → code (paper: 150 hidden, 12-dim code) and SM_max (mm)."""

    def __init__(self, n_features: int, hidden: int = 150, code: int = 12,
                 sm_max_floor: float | None = None, sm_max_scale: float | None = None):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_features, hidden), nn.LeakyReLU(), nn.Linear(hidden, code), nn.LeakyReLU()
        )
        self.sm_max_head = nn.Linear(code, 1)
        self.sm_max_floor, self.sm_max_scale = sm_max_floor, sm_max_scale

    def forward(self, static_norm: Tensor) -> tuple[Tensor, Tensor]:
        """[cells, features] → (code [cells, code], SM_max [cells] in mm)."""
        code = self.encoder(static_norm)
        raw = self.sm_max_head(code)[:, 0]
        return code, BY_NAME[("static", "sm_max")].activate(raw, self.sm_max_floor,
                                                             self.sm_max_scale)


def _per_cell_head(code_size: int, raw_start: Sequence[float]) -> nn.Linear:
    """Static code → raw per-cell coefficients that start near ``raw_start`` in every cell.

    Small weights (0.1 × the default initialization) and the bias at the raw start values:
    the coefficients begin where the table's inverse puts them and spread out as the code
    learns.
    """
    head = nn.Linear(code_size, len(raw_start))
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.copy_(torch.tensor(list(raw_start)))
    return head


class HybridH2MV(nn.Module):
    """The H2MV hybrid: networks → coefficients → the differentiable bucket.

    Args:
        n_features: number of static features.
        forcing_mean: normalization mean of rn, prec, tair (training cells).
        forcing_std: normalization standard deviation of rn, prec, tair.
        static_mean: normalization mean of each static feature.
        static_std: normalization standard deviation of each static feature.
        settings: the networks' sizes and how the recurrence runs (:class:`HybridSettings`).
    """

    def __init__(
        self,
        n_features: int,
        forcing_mean: Sequence[float],
        forcing_std: Sequence[float],
        static_mean: Sequence[float],
        static_std: Sequence[float],
        settings: HybridSettings | None = None,
    ):
        super().__init__()
        s = self.settings = settings or HybridSettings()
        self.register_buffer("forcing_mean", torch.tensor(list(forcing_mean)))
        self.register_buffer("forcing_std", torch.tensor(list(forcing_std)))
        self.register_buffer("static_mean", torch.tensor(list(static_mean)))
        self.register_buffer("static_std", torch.tensor(list(static_std)))
        self.static = StaticModule(n_features, s.static_hidden, s.code_size, s.sm_max_floor,
                                   s.sm_max_scale)
        n_in = 3 + s.code_size + (4 if s.state_feedback else 0)
        if s.state_feedback:
            self.cell = nn.LSTMCell(n_in, s.lstm_hidden)
        else:
            self.lstm = nn.LSTM(n_in, s.lstm_hidden, batch_first=True)
        self.head = nn.Linear(s.lstm_hidden, len(ALPHA_NAMES))
        beta_init = {"snow": 0.9, "baseflow": 0.05, **(s.beta_init or {})}
        self.beta_raw = nn.ParameterDict({
            k: nn.Parameter(torch.tensor(BY_NAME[("beta", k)].inverse(v)))
            for k, v in beta_init.items() if not (k == "baseflow" and s.basin_baseflow)
        })
        self.lstm_hidden = s.lstm_hidden
        # last, so that the other networks' random initialization does not depend on it
        self.routing_head = None
        if s.routing_days:
            self.routing_head = _per_cell_head(
                s.code_size, [BY_NAME[("routing", k)].inverse(v) for k, v in ROUTING_INIT.items()])
        self.baseflow_head = None
        if s.basin_baseflow:
            self.baseflow_head = _per_cell_head(
                s.code_size, [BY_NAME[("beta", "baseflow")].inverse(beta_init["baseflow"])])
        self.corrected = tuple(k for k, on in (("precip_factor", s.basin_precip_factor),
                                               ("temperature_offset",
                                                s.basin_temperature_offset),
                                               ("temperature_spread",
                                                s.elevation_bands > 1)) if on)
        self.correction_head = None
        if self.corrected:
            # starts at no correction (c_P = 1, δ_T = 0 °C) in every basin, σ_T at 1 °C
            start = NO_CORRECTION | {"temperature_spread": SPREAD_INIT}
            self.correction_head = _per_cell_head(
                s.code_size, [BY_NAME[("forcing", k)].inverse(start[k])
                              for k in self.corrected])
        self.baseflow_half_head = None
        if s.nonlinear_baseflow:
            self.baseflow_half_head = _per_cell_head(
                s.code_size, [BY_NAME[("beta", "baseflow_half")].inverse(BASEFLOW_HALF_INIT)])
        self.export_head = None
        if s.basin_gw_export:
            self.export_head = _per_cell_head(
                s.code_size, [BY_NAME[("exchange", "gw_export")].inverse(GW_EXPORT_INIT)])

    # -- pieces --------------------------------------------------------------------------
    def beta(self, code: Tensor | None = None) -> dict[str, Tensor]:
        """The constants β in (0, 1): global (0-d), or per cell [cells] from ``code``.

        With ``nonlinear_baseflow`` also ``baseflow_half`` (K_gw, mm) per cell.
        """
        beta = {k: BY_NAME[("beta", k)].activate(v) for k, v in self.beta_raw.items()}
        per_cell = [(k, head) for k, head in (("baseflow", self.baseflow_head),
                                              ("baseflow_half", self.baseflow_half_head))
                    if head is not None]
        if per_cell and code is None:
            raise ValueError("beta: a per-cell baseflow coefficient needs the static code")
        for k, head in per_cell:
            beta[k] = BY_NAME[("beta", k)].activate(head(code)[:, 0])
        return beta

    def initial_carry(self, n_cells: int, device: torch.device) -> Carry:
        """Empty storages, zero LSTM state, bare vegetation.

        Storages are [cells], or [cells, K] with K elevation bands.
        """
        dtype = physics_dtype(self.head.weight.dtype)
        z = torch.zeros(n_cells, device=device, dtype=dtype)
        k = self.settings.elevation_bands
        s = z if k == 1 else torch.zeros(n_cells, k, device=device, dtype=dtype)
        h = torch.zeros(n_cells, self.lstm_hidden, device=device, dtype=dtype)
        return Carry(s, s.clone(), s.clone(), h, h.clone(), z.clone())

    def initial_history(self, n_cells: int, device: torch.device) -> Tensor | None:
        """No runoff before the first day [cells, K − 1] (None without routing)."""
        if self.routing_head is None:
            return None
        dtype = physics_dtype(self.head.weight.dtype)
        return torch.zeros(n_cells, self.settings.routing_days - 1, device=device, dtype=dtype)

    def route(self, code: Tensor, daily: dict[str, Tensor], history: Tensor
              ) -> tuple[dict[str, Tensor], Tensor]:
        """Route ``q_total`` to the outlet.

        Adds ``q_routed`` and ``routing_store`` to ``daily``; returns the routing
        coefficients and the next history.
        """
        raw = self.routing_head(code)
        coef = {k: BY_NAME[("routing", k)].activate(raw[:, i])
                for i, k in enumerate(names("routing"))}
        q = daily["q_total"]
        kernel = routing.gamma_kernel(coef["route_shape"].to(q.dtype),
                                      coef["route_scale"].to(q.dtype), self.settings.routing_days)
        daily["q_routed"] = routing.route(q, history, kernel)
        daily["routing_store"] = routing.routing_storage(q, history, kernel)
        return coef, routing.next_history(q, history)

    def export(self, code: Tensor, daily: dict[str, Tensor]) -> dict[str, Tensor]:
        """Send the share f_ex of the groundwater outflow out of the basin.

        ``q_base`` and ``q_total`` in ``daily`` become the river's part; adds ``q_export``.
        Returns ``{"gw_export": f_ex}`` [cells].
        """
        f_ex = BY_NAME[("exchange", "gw_export")].activate(self.export_head(code)[:, 0])
        q_base = daily["q_base"]
        channel, exported = runoff.groundwater_export(q_base, f_ex[:, None].to(q_base.dtype))
        daily["q_total"] = runoff.total_runoff(daily["q_surf"], channel)
        daily["q_base"], daily["q_export"] = channel, exported
        return {"gw_export": f_ex}

    def corrections(self, code: Tensor) -> dict[str, Tensor]:
        """The per-cell forcing corrections [cells] by name (none if not configured)."""
        if self.correction_head is None:
            return {}
        raw = self.correction_head(code)
        return {k: BY_NAME[("forcing", k)].activate(raw[:, i])
                for i, k in enumerate(self.corrected)}

    def drivers(self, forcing: Tensor, static: Tensor) -> Drivers:
        """Normalized forcing, static code, SM_max and β of a span of days.

        With forcing corrections the bucket's forcing is the corrected one; the
        normalized forcing the LSTM reads is not. With K elevation bands the bucket's
        forcing has a row per band [cells · K, days, 3] (:mod:`process_layers.bands`).
        """
        f_norm = (forcing - self.forcing_mean) / self.forcing_std
        code, sm_max = self.static((static - self.static_mean) / self.static_std)
        corr = self.corrections(code)
        rn_is_data = not forcing.requires_grad
        if corr:
            prec, tair = forcing[..., 1], forcing[..., 2]
            if "precip_factor" in corr:
                prec = prec * corr["precip_factor"][:, None].to(prec.dtype)
            if "temperature_offset" in corr:
                tair = tair + corr["temperature_offset"][:, None].to(tair.dtype)
            forcing = torch.stack([forcing[..., 0], prec, tair], -1)
        k = self.settings.elevation_bands
        if k > 1:
            tair = bands.band_temperatures(forcing[..., 2], corr["temperature_spread"], k)
            forcing = torch.cat([bands.to_bands(forcing[..., :2], k), tair[..., None]], -1)
        return Drivers(forcing, f_norm, code, sm_max, self.beta(code), corr or None,
                       rn_is_data, k)

    def physics_day(self, rn_mm, prec, tair_c, raw, sm_max, beta, carry: Carry):
        """One bucket day in float32 (float64 for a float64 model), whatever the networks'.

        With K elevation bands the forcing has a row per band [cells · K] and the carry's
        storages are [cells, K]; the fluxes returned are the band means [cells], the
        states per band.
        """
        dtype = physics_dtype(raw.dtype)
        k = self.settings.elevation_bands
        with torch.autocast(device_type=raw.device.type, enabled=False):
            alpha = activate_alpha(raw.to(dtype))
            fluxes, states = h2mv.day(
                rn_mm, prec, tair_c, Alpha(**{n: bands.to_bands(a, k) for n, a in alpha.items()}),
                bands.to_bands(sm_max.to(dtype), k),
                Beta(**{n: bands.to_bands(v.to(dtype), k) for n, v in beta.items()}),
                States(carry.swe.reshape(-1), carry.sm.reshape(-1), carry.gw.reshape(-1)),
            )
        if k > 1:
            fluxes = type(fluxes)(**{n: bands.band_mean(v, k) for n, v in fluxes.items()})
            states = States(*(bands.split_bands(v, k) for v in states.values()))
        return fluxes, states, alpha

    def fused_feedback_reason(self, forcing: Tensor, f_norm: Tensor | None = None
                              ) -> str | None:
        """Why the fused state-feedback scan cannot run here, or None if it can.

        ``forcing`` is what the bucket reads (corrected, if corrections are on), ``f_norm``
        what the LSTM reads.
        """
        missing = h2mv.kernel_missing(forcing.device)
        if missing is not None:
            return missing
        on_gpu = h2mv.fused_kernel(forcing.device) == "triton"
        if self.settings.elevation_bands > 1 and on_gpu:
            return ("elevation bands run the day loop on a GPU; its fused scan has one bucket "
                    "per cell")
        if self.head.weight.dtype not in (torch.float32, torch.float64):
            return f"parameters are {self.head.weight.dtype}; the fused scan needs float32/64"
        if f_norm is not None and f_norm.requires_grad:
            return ("the LSTM's forcing requires a gradient; the fused scan differentiates "
                    "only the bucket's")
        if forcing.requires_grad and on_gpu:
            return ("the forcing requires a gradient (per-basin corrections); the GPU scan "
                    "treats forcing as data")
        if torch.is_autocast_enabled("cpu"):
            return "autocast is on; the fused scan runs the networks in float32/float64"
        return None

    # -- public --------------------------------------------------------------------------
    def forward(self, forcing: Tensor, static: Tensor, carry: Carry | None = None,
                history: Tensor | None = None) -> HybridOutput:
        """Run the hybrid over a span of days.

        Args:
            forcing: [cells, days, 3]: rn (W m⁻²), prec (mm day⁻¹), tair (K).
            static: [cells, features] in the store's units.
            carry: the state at the start (from :meth:`spinup`); empty if None.
            history: with routing, the runoff of the K − 1 days before [cells, K − 1];
                none if None.

        Returns:
            :class:`HybridOutput` with daily outputs [cells, days] by name.
        """
        n_cells = forcing.shape[0]
        carry = carry if carry is not None else self.initial_carry(n_cells, forcing.device)
        d = self.drivers(forcing, static)
        # the bucket's (corrected) forcing and the LSTM's decide whether the fused op can run
        daily, alpha, carry = choose_scan(self, d.forcing, d.f_norm)(self, d, carry)
        exchange = None if self.export_head is None else self.export(d.code, daily)
        coef = None
        if self.routing_head is not None:
            history = (history if history is not None
                       else self.initial_history(n_cells, forcing.device))
            coef, history = self.route(d.code, daily, history)
        return HybridOutput(daily, alpha, d.sm_max, d.beta, carry, coef, history,
                            d.corrections, exchange)

    @torch.no_grad()
    def spinup_state(self, forcing: Tensor, static: Tensor, carry: Carry | None = None,
                     history: Tensor | None = None) -> tuple[Carry, Tensor | None]:
        """Run without gradients over the spin-up days (§2.3.3).

        Returns the carry at their end and, with routing, the runoff history.
        """
        if forcing.shape[1] == 0:
            n, device = forcing.shape[0], forcing.device
            return (carry if carry is not None else self.initial_carry(n, device),
                    history if history is not None else self.initial_history(n, device))
        out = self.forward(forcing, static, carry, history)
        return out.carry.detach(), None if out.history is None else out.history.detach()

    def spinup(self, forcing: Tensor, static: Tensor, carry: Carry | None = None) -> Carry:
        """Run without gradients over the spin-up days; the carry at their end (§2.3.3)."""
        return self.spinup_state(forcing, static, carry)[0]
