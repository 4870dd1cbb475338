"""The networks of H2MV (paper §2.2.2–2.2.3) and the hybrid model that drives the bucket.

- Static module: normalized static features → hidden layer → compressed code (leaky
  ReLU), and code → SM_max (softplus with a floor, mm).
- Dynamic module: an LSTM fed each day the normalized forcing, the static code and (in
  the paper's configuration) the previous day's storages and fAPAR; a linear head emits
  the α and fAPAR, activated into their bounds by the table of
  :mod:`process_layers.parameters`.
- Global constants β (snow, baseflow): learned directly, through a sigmoid.

Two configurations: ``state_feedback=True`` (the paper's: one LSTM cell step and one
bucket step per day, storages fed back) and ``state_feedback=False`` (one whole-sequence
``nn.LSTM``, then the fused :func:`process_layers.h2mv.simulate`): much faster, but the
LSTM cannot react to the model's own storages, only to the forcing history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from h2mv_hybrid.model.feedback import feedback_scan
from process_layers import FLUX_NAMES, Alpha, Beta, States, h2mv
from process_layers.parameters import ALPHA_NAMES, BY_NAME
from process_layers.units import kelvin_to_celsius, net_radiation_mm_per_day

#: Daily outputs of the hybrid model: every flux and storage of the bucket, and fAPAR.
OUTPUT_NAMES: tuple[str, ...] = (*FLUX_NAMES, "fapar")
ChunkMode = Literal["checkpoint", "truncate"]
SWE_ROW, SM_ROW, GW_ROW = (FLUX_NAMES.index(k) for k in ("swe", "sm", "gw"))
FeedbackBackend = Literal["auto", "fused", "loop"]


def physics_dtype(dtype: torch.dtype) -> torch.dtype:
    """The bucket runs in float32, or float64 for a float64 model, never in half precision."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def activate_alpha(raw: Tensor) -> dict[str, Tensor]:
    """Raw head outputs [..., 7] (order of ``ALPHA_NAMES``) → α inside their bounds."""
    out = {}
    for i, name in enumerate(ALPHA_NAMES):
        act = BY_NAME[("alpha", name)].activation
        out[name] = F.softplus(raw[..., i]) if act == "softplus" else torch.sigmoid(raw[..., i])
    return out


class Carry(NamedTuple):
    """Everything carried from one day to the next: storages (mm), LSTM state, fAPAR."""

    swe: Tensor
    sm: Tensor
    gw: Tensor
    h: Tensor
    c: Tensor
    fapar: Tensor

    def detach(self) -> Carry:
        """The same carry, cut from the graph (spin-up results, truncated BPTT)."""
        return Carry(*(t.detach() for t in self))


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
                 sm_max_floor: float = 10.0, sm_max_scale: float = 100.0):
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
        return code, self.sm_max_floor + self.sm_max_scale * F.softplus(raw)


class HybridH2MV(nn.Module):
    """The H2MV hybrid: networks → coefficients → the differentiable bucket.

    Args:
        n_features: number of static features.
        forcing_mean: normalization mean of rn, prec, tair (training cells).
        forcing_std: normalization standard deviation of rn, prec, tair.
        static_mean: normalization mean of each static feature.
        static_std: normalization standard deviation of each static feature.
        static_hidden: width of the static module's hidden layer.
        code_size: size of the static code.
        lstm_hidden: LSTM hidden size.
        state_feedback: the paper's configuration (storages fed back to the LSTM daily).
        sm_max_floor: smallest SM_max, mm.
        sm_max_scale: scale of the SM_max softplus, mm.
        beta_init: initial β (snow, baseflow), each in (0, 1).
        state_scale: storages enter the LSTM as log1p(storage / state_scale), mm.
        time_chunk: days per chunk for gradient checkpointing or truncation (None: off).
        chunk_mode: ``checkpoint`` (exact gradients, recompute each chunk in backward) or
            ``truncate`` (truncated back-propagation: carried states are detached).
        feedback_backend: how the state-feedback recurrence runs: ``fused`` (one autograd
            function with a hand-written backward, :mod:`h2mv_hybrid.model.feedback`;
            CPU, float32/float64, no autocast), ``loop`` (day by day with autograd; any
            device and precision) or ``auto`` (fused where it can run, else loop).
    """

    def __init__(
        self,
        n_features: int,
        forcing_mean: Sequence[float],
        forcing_std: Sequence[float],
        static_mean: Sequence[float],
        static_std: Sequence[float],
        static_hidden: int = 150,
        code_size: int = 12,
        lstm_hidden: int = 100,
        state_feedback: bool = True,
        sm_max_floor: float = 10.0,
        sm_max_scale: float = 100.0,
        beta_init: dict[str, float] | None = None,
        state_scale: float = 10.0,
        time_chunk: int | None = None,
        chunk_mode: ChunkMode = "checkpoint",
        feedback_backend: FeedbackBackend = "auto",
    ):
        super().__init__()
        if feedback_backend not in ("auto", "fused", "loop"):
            raise ValueError(f"feedback_backend: expected auto, fused or loop, found "
                             f"{feedback_backend!r}")
        if chunk_mode not in ("checkpoint", "truncate"):
            raise ValueError(f"chunk_mode: expected checkpoint or truncate, found {chunk_mode!r}")
        if time_chunk is not None and time_chunk < 1:
            raise ValueError(f"time_chunk: expected ≥ 1 days or None, found {time_chunk}")
        self.register_buffer("forcing_mean", torch.tensor(list(forcing_mean)))
        self.register_buffer("forcing_std", torch.tensor(list(forcing_std)))
        self.register_buffer("static_mean", torch.tensor(list(static_mean)))
        self.register_buffer("static_std", torch.tensor(list(static_std)))
        self.static = StaticModule(n_features, static_hidden, code_size, sm_max_floor,
                                   sm_max_scale)
        self.state_feedback = state_feedback
        n_in = 3 + code_size + (4 if state_feedback else 0)
        if state_feedback:
            self.cell = nn.LSTMCell(n_in, lstm_hidden)
        else:
            self.lstm = nn.LSTM(n_in, lstm_hidden, batch_first=True)
        self.head = nn.Linear(lstm_hidden, len(ALPHA_NAMES))
        beta_init = {"snow": 0.9, "baseflow": 0.05, **(beta_init or {})}
        for k, v in beta_init.items():
            if not 0 < v < 1:
                raise ValueError(f"beta_init[{k!r}]: expected a value in (0, 1), found {v}")
        self.beta_raw = nn.ParameterDict(
            {k: nn.Parameter(torch.tensor(math.log(v / (1 - v)))) for k, v in beta_init.items()}
        )
        self.lstm_hidden = lstm_hidden
        self.state_scale = state_scale
        self.time_chunk, self.chunk_mode = time_chunk, chunk_mode
        self.feedback_backend = feedback_backend

    # -- pieces --------------------------------------------------------------------------
    def beta(self) -> dict[str, Tensor]:
        """The global constants β in (0, 1)."""
        return {k: torch.sigmoid(v) for k, v in self.beta_raw.items()}

    def initial_carry(self, n_cells: int, device: torch.device) -> Carry:
        """Empty storages, zero LSTM state, bare vegetation."""
        dtype = physics_dtype(self.head.weight.dtype)
        z = torch.zeros(n_cells, device=device, dtype=dtype)
        h = torch.zeros(n_cells, self.lstm_hidden, device=device, dtype=dtype)
        return Carry(z, z.clone(), z.clone(), h, h.clone(), z.clone())

    def _inputs(self, forcing: Tensor, static: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f_norm = (forcing - self.forcing_mean) / self.forcing_std
        code, sm_max = self.static((static - self.static_mean) / self.static_std)
        return f_norm, code, sm_max

    def _physics(self, rn_mm, prec, tair_c, raw, sm_max, beta, carry: Carry):
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

    def _feedback_days(self, forcing: Tensor, f_norm: Tensor, code: Tensor, sm_max: Tensor,
                       carry: Carry, beta: dict[str, Tensor]) -> tuple[Tensor, Carry]:
        """The state-feedback loop, day by day → (outputs [28, cells, days], carry).

        ``forcing``: [cells, days, 3] rn (W m⁻²), prec (mm day⁻¹), tair (K). Output rows:
        the fluxes of ``FLUX_NAMES``, then the α of ``ALPHA_NAMES``.
        """
        dtype = physics_dtype(self.head.weight.dtype)
        rn_mm = net_radiation_mm_per_day(forcing[..., 0]).to(dtype)
        prec = forcing[..., 1].to(dtype)
        tair_c = kelvin_to_celsius(forcing[..., 2]).to(dtype)
        out = []
        for t in range(f_norm.shape[1]):
            states = torch.stack([carry.swe, carry.sm, carry.gw], -1)
            x = torch.cat([f_norm[:, t], code, torch.log1p(states / self.state_scale),
                           carry.fapar[:, None]], -1)
            h, c = self.cell(x, (carry.h, carry.c))
            fluxes, st, alpha = self._physics(rn_mm[:, t], prec[:, t], tair_c[:, t], self.head(h),
                                              sm_max, beta, carry)
            carry = Carry(st.swe, st.sm, st.gw, h, c, alpha["fapar"])
            out.append(torch.stack([*(fluxes[k] for k in FLUX_NAMES),
                                    *(alpha[k] for k in ALPHA_NAMES)]))
        return torch.stack(out, -1), carry

    def _feedback_fused(self, forcing: Tensor, f_norm: Tensor, code: Tensor, sm_max: Tensor,
                        carry: Carry, beta: dict[str, Tensor],
                        chunk: int | None = None) -> tuple[Tensor, Carry]:
        """The same recurrence as :meth:`_feedback_days`, as one :class:`FeedbackScan`.

        ``chunk``: checkpoint every this many days inside the op (see FeedbackScan).
        """
        w_ih = self.cell.weight_ih
        n_code = code.shape[1]
        # Gate pre-activations = code_proj + [h, f_norm, states, fapar] @ w_x.T: the code
        # is the same every day, so its share is computed once.
        code_proj = torch.addmm(self.cell.bias_ih + self.cell.bias_hh, code,
                                w_ih[:, 3:3 + n_code].t())
        w_x = torch.cat([self.cell.weight_hh, w_ih[:, :3], w_ih[:, 3 + n_code:]], 1)
        out, h, c = feedback_scan(f_norm, forcing, self.state_scale, code_proj, w_x,
                                  self.head.weight, self.head.bias, sm_max, beta["snow"],
                                  beta["baseflow"], tuple(carry), chunk)
        return out, Carry(out[SWE_ROW, :, -1], out[SM_ROW, :, -1], out[GW_ROW, :, -1], h, c,
                          out[-1, :, -1])

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

    def _use_fused(self, forcing: Tensor) -> bool:
        reason = self.fused_feedback_reason(forcing)
        if self.feedback_backend == "fused" and reason is not None:
            raise ValueError(f"feedback_backend='fused' cannot run: {reason}; use 'loop' or "
                             f"'auto'")
        return self.feedback_backend == "fused" or (self.feedback_backend == "auto"
                                                   and reason is None)

    def _chunked(self, forcing, f_norm, code, sm_max, carry, beta) -> tuple[Tensor, Carry]:
        fused = self._use_fused(forcing)
        if fused and self.chunk_mode == "checkpoint":
            # The fused op checkpoints itself: it keeps the state every time_chunk days
            # and recomputes one chunk at a time in backward, with no autograd machinery.
            return self._feedback_fused(forcing, f_norm, code, sm_max, carry, beta,
                                        self.time_chunk)
        days = self._feedback_fused if fused else self._feedback_days
        span = self.time_chunk or f_norm.shape[1]
        pieces = []
        for t0 in range(0, f_norm.shape[1], span):
            sl = slice(t0, t0 + span)
            if self.time_chunk is not None and self.chunk_mode == "checkpoint" \
                    and torch.is_grad_enabled():
                def run(fo, fn, cd, sx, b_snow, b_gw, *cy):
                    o, cr = days(fo, fn, cd, sx, Carry(*cy), {"snow": b_snow, "baseflow": b_gw})
                    return (o, *cr)
                res = checkpoint(run, forcing[:, sl], f_norm[:, sl], code, sm_max, beta["snow"],
                                 beta["baseflow"], *carry, use_reentrant=False)
                o, carry = res[0], Carry(*res[1:])
            else:
                o, carry = days(forcing[:, sl], f_norm[:, sl], code, sm_max, carry, beta)
                if self.time_chunk is not None and self.chunk_mode == "truncate":
                    carry = carry.detach()
            pieces.append(o)
        return (torch.cat(pieces, -1) if len(pieces) > 1 else pieces[0]), carry

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
        f_norm, code, sm_max = self._inputs(forcing, static)
        beta = self.beta()
        if self.state_feedback:
            out, carry = self._chunked(forcing, f_norm, code, sm_max, carry, beta)
            rows = out.unbind(0)
            alpha = dict(zip(ALPHA_NAMES, rows[len(FLUX_NAMES):], strict=True))
            daily = dict(zip(FLUX_NAMES, rows[:len(FLUX_NAMES)], strict=True))
            daily["fapar"] = alpha["fapar"]
        else:
            x = torch.cat([f_norm, code[:, None].expand(-1, f_norm.shape[1], -1)], -1)
            hs, (h, c) = self.lstm(x, (carry.h[None], carry.c[None]))
            raw = self.head(hs)
            with torch.autocast(device_type=forcing.device.type, enabled=False):
                alpha = activate_alpha(raw.float())
                fluxes = h2mv.simulate(
                    {"rn": forcing[..., 0].float(), "prec": forcing[..., 1].float(),
                     "tair": forcing[..., 2].float()},
                    alpha, {"sm_max": sm_max.float()}, {k: v.float() for k, v in beta.items()},
                    {"swe": carry.swe, "sm": carry.sm, "gw": carry.gw}, validate_inputs=False,
                )
            daily = {k: fluxes[k] for k in FLUX_NAMES} | {"fapar": alpha["fapar"]}
            carry = Carry(fluxes.swe[:, -1], fluxes.sm[:, -1], fluxes.gw[:, -1], h[0].float(),
                          c[0].float(), alpha["fapar"][:, -1])
        return HybridOutput(daily, alpha, sm_max, beta, carry)

    @torch.no_grad()
    def spinup(self, forcing: Tensor, static: Tensor, carry: Carry | None = None) -> Carry:
        """Run without gradients over the spin-up days; the carry at their end (§2.3.3)."""
        if forcing.shape[1] == 0:
            return carry if carry is not None else self.initial_carry(forcing.shape[0],
                                                                      forcing.device)
        return self.forward(forcing, static, carry).carry.detach()
