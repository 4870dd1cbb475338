"""The networks of H2MV (paper §2.2.2–2.2.3) and the hybrid model that drives the bucket.

- Static module: normalized static features → hidden layer → compressed code (leaky
  ReLU), and code → SM_max (mm), activated as the coefficient table says
  (:mod:`process_layers.parameters`: floor + scale · softplus).
- Dynamic module: an LSTM fed each day the normalized forcing, the static code and (in
  the paper's configuration) the previous day's storages and fAPAR; a linear layer
  emits the α and fAPAR, activated into their bounds by the same table.
- Global constants β (snow, baseflow): learned directly, activated by the table (sigmoid).

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
from process_layers import FLUX_NAMES, Alpha, Beta, States, h2mv
from process_layers.parameters import ALPHA_NAMES, BY_NAME

#: Daily outputs of the hybrid model: every flux and storage of the bucket, and fAPAR.
OUTPUT_NAMES: tuple[str, ...] = (*FLUX_NAMES, "fapar")
ChunkMode = Literal["checkpoint", "truncate"]
FeedbackBackend = Literal["auto", "fused", "loop"]


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
        time_chunk: days per chunk of gradient checkpointing / truncation (None: off).
        chunk_mode: ``checkpoint`` (exact gradients, recompute each chunk in backward) or
            ``truncate`` (truncated back-propagation: carried states are detached).
        feedback_backend: the state-feedback recurrence as one fused op with a hand-written
            backward (``fused``; CPU, float32/float64, no autocast), day by day with
            autograd (``loop``; any device and precision), or ``auto`` (fused where it can
            run, else loop).
    """

    static_hidden: int = 150
    code_size: int = 12
    lstm_hidden: int = 100
    state_feedback: bool = True
    sm_max_floor: float | None = None
    sm_max_scale: float | None = None
    beta_init: dict[str, float] | None = None
    state_scale: float = 10.0
    time_chunk: int | None = None
    chunk_mode: ChunkMode = "checkpoint"
    feedback_backend: FeedbackBackend = "auto"

    def __post_init__(self):
        check_choice("feedback_backend", self.feedback_backend, FeedbackBackend)
        check_choice("chunk_mode", self.chunk_mode, ChunkMode)
        if self.time_chunk is not None and self.time_chunk < 1:
            raise ValueError(f"time_chunk: expected ≥ 1 days or None, found {self.time_chunk}")
        for k, v in (self.beta_init or {}).items():
            if not 0 < v < 1:
                raise ValueError(f"beta_init[{k!r}]: expected a value in (0, 1), found {v}")


# Checkpoints keep the settings in their hyperparameters (plain data).
torch.serialization.add_safe_globals([HybridSettings])
#: The paper's networks (§2.2: static 150 → 12, LSTM 100, daily state feedback).
PAPER_NETWORK = HybridSettings()


class HybridOutput(NamedTuple):
    """Daily outputs [cells, days] by name (``OUTPUT_NAMES``), coefficients, final carry."""

    daily: dict[str, Tensor]
    alpha: dict[str, Tensor]
    sm_max: Tensor
    beta: dict[str, Tensor]
    carry: Carry


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
            for k, v in beta_init.items()
        })
        self.lstm_hidden = s.lstm_hidden

    # -- pieces --------------------------------------------------------------------------
    def beta(self) -> dict[str, Tensor]:
        """The global constants β in (0, 1)."""
        return {k: BY_NAME[("beta", k)].activate(v) for k, v in self.beta_raw.items()}

    def initial_carry(self, n_cells: int, device: torch.device) -> Carry:
        """Empty storages, zero LSTM state, bare vegetation."""
        dtype = physics_dtype(self.head.weight.dtype)
        z = torch.zeros(n_cells, device=device, dtype=dtype)
        h = torch.zeros(n_cells, self.lstm_hidden, device=device, dtype=dtype)
        return Carry(z, z.clone(), z.clone(), h, h.clone(), z.clone())

    def drivers(self, forcing: Tensor, static: Tensor) -> Drivers:
        """Normalized forcing, static code, SM_max and β of a span of days."""
        f_norm = (forcing - self.forcing_mean) / self.forcing_std
        code, sm_max = self.static((static - self.static_mean) / self.static_std)
        return Drivers(forcing, f_norm, code, sm_max, self.beta())

    def physics_day(self, rn_mm, prec, tair_c, raw, sm_max, beta, carry: Carry):
        """One bucket day in float32 (float64 for a float64 model), whatever the networks'."""
        dtype = physics_dtype(raw.dtype)
        with torch.autocast(device_type=raw.device.type, enabled=False):
            alpha = activate_alpha(raw.to(dtype))
            fluxes, states = h2mv.day(
                rn_mm, prec, tair_c, Alpha(**alpha), sm_max.to(dtype),
                Beta(snow=beta["snow"].to(dtype), baseflow=beta["baseflow"].to(dtype)),
                States(carry.swe, carry.sm, carry.gw),
            )
        return fluxes, states, alpha

    def fused_feedback_reason(self, forcing: Tensor) -> str | None:
        """Why the fused state-feedback scan cannot run here, or None if it can."""
        if forcing.device.type != "cpu":
            return f"tensors are on {forcing.device}; the fused scan runs on the CPU"
        if torch.is_autocast_enabled("cpu"):
            return "autocast is on; the fused scan runs the networks in float32/float64"
        if self.head.weight.dtype not in (torch.float32, torch.float64):
            return f"parameters are {self.head.weight.dtype}; the fused scan needs float32/64"
        if forcing.requires_grad:
            return "the forcing requires a gradient; the fused scan treats forcing as data"
        return None

    # -- public --------------------------------------------------------------------------
    def forward(self, forcing: Tensor, static: Tensor, carry: Carry | None = None) -> HybridOutput:
        """Run the hybrid over a span of days.

        Args:
            forcing: [cells, days, 3]: rn (W m⁻²), prec (mm day⁻¹), tair (K).
            static: [cells, features] in the store's units.
            carry: the state at the start (from :meth:`spinup`); empty if None.

        Returns:
            :class:`HybridOutput` with daily outputs [cells, days] by name.
        """
        n_cells = forcing.shape[0]
        carry = carry if carry is not None else self.initial_carry(n_cells, forcing.device)
        d = self.drivers(forcing, static)
        daily, alpha, carry = choose_scan(self, forcing)(self, d, carry)
        return HybridOutput(daily, alpha, d.sm_max, d.beta, carry)

    @torch.no_grad()
    def spinup(self, forcing: Tensor, static: Tensor, carry: Carry | None = None) -> Carry:
        """Run without gradients over the spin-up days; the carry at their end (§2.3.3)."""
        if forcing.shape[1] == 0:
            return carry if carry is not None else self.initial_carry(forcing.shape[0],
                                                                      forcing.device)
        return self.forward(forcing, static, carry).carry.detach()
