"""How the hybrid runs over time: one scan interface, three implementations.

A scan takes the model, the :class:`~h2mv_hybrid.model.networks.Drivers` of a span of days
and the carry at its start, and returns the daily outputs, the α and the carry at its
end (the shape of diffrax's solvers: a small class per method, chosen once, instead of
flags tested inside one loop):

- :class:`DayLoop`: the state-feedback recurrence day by day with autograd (any device
  and precision; the reference);
- :class:`FusedFeedback`: the same recurrence as one autograd function with a
  hand-written backward (:class:`~h2mv_hybrid.model.feedback.FeedbackScan` on the CPU,
  :class:`~h2mv_hybrid.model.feedback_gpu.FeedbackScanGPU` on a CUDA GPU);
- :class:`Decoupled`: one whole-sequence LSTM (on the CPU
  :class:`~h2mv_hybrid.model.lstm_scan.LSTMScan`, else ``nn.LSTM``), then the fused
  bucket (:func:`process_layers.h2mv.simulate`).

The state-feedback scans share :class:`FeedbackChunks`: with ``time_chunk`` the days run
in chunks, checkpointed (exact gradients) or truncated (carry detached between chunks);
:class:`Decoupled` chunks its LSTM and head the same way.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from h2mv_hybrid.model.feedback import feedback_scan
from h2mv_hybrid.model.lstm_scan import lstm_scan, scan_reason
from process_layers import FLUX_NAMES, bands, h2mv
from process_layers.parameters import ALPHA_NAMES, activate
from process_layers.units import kelvin_to_celsius, net_radiation_mm_per_day

#: Rows of a state-feedback scan's output: the fluxes, then the α.
ROWS: tuple[str, ...] = (*FLUX_NAMES, *ALPHA_NAMES)
SWE_ROW, SM_ROW, GW_ROW = (ROWS.index(k) for k in ("swe", "sm", "gw"))

Daily = dict[str, Tensor]


def physics_dtype(dtype: torch.dtype) -> torch.dtype:
    """The bucket runs in float32, or float64 for a float64 model, never in half precision."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def activate_alpha(raw: Tensor) -> dict[str, Tensor]:
    """Raw head outputs [..., 7] (order of ``ALPHA_NAMES``) → α inside their bounds."""
    return activate("alpha", raw)


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


class Drivers(NamedTuple):
    """What drives a span of days besides the carry (see :class:`HybridH2MV`)."""

    forcing: Tensor  # [cells · bands, days, 3]: rn (W m⁻²), prec (mm day⁻¹), tair (K)
    f_norm: Tensor  # [cells, days, 3]: the forcing normalized
    code: Tensor  # [cells, code]: the static code
    sm_max: Tensor  # [cells], mm
    beta: dict[str, Tensor]  # β by name, 0-d
    corrections: dict[str, Tensor] | None = None  # per-cell forcing corrections, or None
    # True where the given forcing carries no gradient: then rn, which no correction
    # touches, is data even when it is a slice of the corrected (differentiable) forcing
    rn_is_data: bool = False
    bands: int = 1  # elevation bands: the bucket's forcing has a row per band

    def days(self, span: slice) -> Drivers:
        """The same drivers over a span of days."""
        return self._replace(forcing=self.forcing[:, span], f_norm=self.f_norm[:, span])



class HybridH2MV(Protocol):
    """What a scan reads of the model (:class:`h2mv_hybrid.model.networks.HybridH2MV`)."""

    settings: Any  # HybridSettings
    cell: nn.LSTMCell  # the state-feedback configuration's
    lstm: nn.LSTM  # the decoupled configuration's
    head: nn.Linear

    def physics_day(self, rn_mm: Tensor, prec: Tensor, tair_c: Tensor, raw: Tensor,
                    sm_max: Tensor, beta: dict[str, Tensor], carry: Carry) -> tuple:
        """One bucket day: (fluxes, states, α)."""

    def fused_feedback_reason(self, forcing: Tensor, f_norm: Tensor | None = None
                              ) -> str | None:
        """Why the fused state-feedback op cannot run on ``forcing``, or None."""


class Scan:
    """One way to run the hybrid over a span of days."""

    def __call__(self, net: HybridH2MV, d: Drivers, carry: Carry
                 ) -> tuple[Daily, Daily, Carry]:
        """``(daily outputs, α, carry at the end)``; daily outputs [cells, days] by name."""
        raise NotImplementedError


class FeedbackChunks(Scan):
    """The state-feedback recurrence, in chunks of ``time_chunk`` days if asked.

    Subclasses implement :meth:`days`: the recurrence over a span, as rows
    [len(ROWS), cells, days].
    """

    def days(self, net: HybridH2MV, d: Drivers, carry: Carry) -> tuple[Tensor, Carry]:
        """The recurrence over the days of ``d``: (rows [28, cells, days], carry)."""
        raise NotImplementedError

    def chunked(self, net: HybridH2MV, d: Drivers, carry: Carry) -> tuple[Tensor, Carry]:
        """:meth:`days` over chunks of ``time_chunk`` days, checkpointed or truncated."""
        s = net.settings
        n_days = d.f_norm.shape[1]
        chunk = s.chunk_days(n_days)
        span = chunk or n_days
        pieces = []
        for t0 in range(0, n_days, span):
            part = d.days(slice(t0, t0 + span))
            if chunk is not None and s.chunk_mode == "checkpoint" and torch.is_grad_enabled():
                def run(fo, fn, cd, sx, *rest, names=tuple(part.beta)):
                    beta = dict(zip(names, rest[:len(names)], strict=True))
                    o, cr = self.days(net, Drivers(fo, fn, cd, sx, beta, bands=d.bands),
                                      Carry(*rest[len(names):]))
                    return (o, *cr)
                res = checkpoint(run, *part[:4], *part.beta.values(), *carry,
                                 use_reentrant=False)
                o, carry = res[0], Carry(*res[1:])
            else:
                o, carry = self.days(net, part, carry)
                if chunk is not None and s.chunk_mode == "truncate":
                    carry = carry.detach()
            pieces.append(o)
        return (torch.cat(pieces, -1) if len(pieces) > 1 else pieces[0]), carry

    def __call__(self, net: HybridH2MV, d: Drivers, carry: Carry
                 ) -> tuple[Daily, Daily, Carry]:
        """The rows of :meth:`chunked` as daily outputs and α by name."""
        out, carry = self.chunked(net, d, carry)
        rows = dict(zip(ROWS, out.unbind(0), strict=True))
        alpha = {k: rows[k] for k in ALPHA_NAMES}
        daily = {k: rows[k] for k in FLUX_NAMES} | {"fapar": alpha["fapar"]}
        return daily, alpha, carry


class DayLoop(FeedbackChunks):
    """Day by day with autograd: LSTM cell, head, activations, :func:`h2mv.day`."""

    def days(self, net: HybridH2MV, d: Drivers, carry: Carry) -> tuple[Tensor, Carry]:  # noqa: D102
        dtype = physics_dtype(net.head.weight.dtype)
        rn_mm = net_radiation_mm_per_day(d.forcing[..., 0]).to(dtype)
        prec = d.forcing[..., 1].to(dtype)
        tair_c = kelvin_to_celsius(d.forcing[..., 2]).to(dtype)
        scale = net.settings.state_scale
        out = []
        k = d.bands
        for t in range(d.f_norm.shape[1]):
            # the LSTM reads the basin's storages: with elevation bands, their band means
            states = torch.stack([carry.swe, carry.sm, carry.gw], -1)
            if k > 1:
                states = states.mean(1)
            x = torch.cat([d.f_norm[:, t], d.code, torch.log1p(states / scale),
                           carry.fapar[:, None]], -1)
            h, c = net.cell(x, (carry.h, carry.c))
            fluxes, st, alpha = net.physics_day(rn_mm[:, t], prec[:, t], tair_c[:, t],
                                                net.head(h), d.sm_max, d.beta, carry)
            carry = Carry(st.swe, st.sm, st.gw, h, c, alpha["fapar"])
            out.append(torch.stack([*(fluxes[k] for k in FLUX_NAMES),
                                    *(alpha[k] for k in ALPHA_NAMES)]))
        return torch.stack(out, -1), carry


class FusedFeedback(FeedbackChunks):
    """The recurrence as one fused op: numba's on the CPU, Triton's on a CUDA GPU.

    With ``chunk_mode: checkpoint`` the op checkpoints itself: it keeps the state every
    ``time_chunk`` days and recomputes one chunk at a time in backward, with no autograd
    machinery; truncation runs it once per chunk.
    """

    def days(self, net: HybridH2MV, d: Drivers, carry: Carry, chunk: int | None = None
             ) -> tuple[Tensor, Carry]:
        """The recurrence over the days of ``d``, checkpointed every ``chunk`` days inside."""
        cell = net.cell
        dt = physics_dtype(net.head.weight.dtype)
        n_code = d.code.shape[1]
        device = d.forcing.device
        # Under autocast (bf16-mixed on a GPU) the fused op still runs the recurrence in
        # float32: the networks before it (static module) keep autocast's precision.
        with torch.autocast(device_type=device.type, enabled=False):
            w_ih = cell.weight_ih.to(dt)
            # Gate pre-activations = code_proj + [h, f_norm, states, fapar] @ w_x.T: the
            # code is the same every day, so its share is computed once.
            code_proj = torch.addmm((cell.bias_ih + cell.bias_hh).to(dt), d.code.to(dt),
                                    w_ih[:, 3:3 + n_code].t())
            w_x = torch.cat([cell.weight_hh.to(dt), w_ih[:, :3], w_ih[:, 3 + n_code:]], 1)
            half = d.beta.get("baseflow_half")
            out, h, c = feedback_scan(d.f_norm, d.forcing, net.settings.state_scale,
                                      code_proj, w_x, net.head.weight.to(dt),
                                      net.head.bias.to(dt), d.sm_max.to(dt),
                                      d.beta["snow"].to(dt), d.beta["baseflow"].to(dt),
                                      tuple(x.to(dt) for x in carry), chunk,
                                      h2mv.fused_kernel(device),
                                      None if half is None else half.to(dt))
        # With elevation bands the op's rows are bands: the fluxes are their means, the α
        # (a cell's, on each of its rows) band 0's, and the carry keeps every band's
        # storages.
        k = d.bands
        last = [bands.split_bands(out[r, :, -1], k) for r in (SWE_ROW, SM_ROW, GW_ROW)]
        if k > 1:
            rows = out.reshape(len(ROWS), -1, k, out.shape[-1])
            out = torch.cat([rows[:len(FLUX_NAMES)].mean(2), rows[len(FLUX_NAMES):, :, 0]])
        return out, Carry(*last, h, c, out[-1, :, -1])

    def chunked(self, net: HybridH2MV, d: Drivers, carry: Carry) -> tuple[Tensor, Carry]:  # noqa: D102
        if net.settings.chunk_mode == "checkpoint":
            return self.days(net, d, carry, net.settings.chunk_days(d.f_norm.shape[1]))
        return super().chunked(net, d, carry)


class Decoupled(Scan):
    """One whole-sequence LSTM over forcing and code, then the fused bucket.

    With K elevation bands the bucket runs on a row per band (the basin's α, SM_max and
    per-cell β repeated), and the daily outputs are the band means.
    """

    def __call__(self, net: HybridH2MV, d: Drivers, carry: Carry
                 ) -> tuple[Daily, Daily, Carry]:
        """Daily outputs, α and the carry at the end, as :class:`Scan` says."""
        forcing = d.forcing
        raw, h, c = self.networks(net, d.f_norm, carry.h, carry.c, d.code)
        dt = physics_dtype(raw.dtype)  # float32, or float64 for a float64 model
        k = d.bands
        with torch.autocast(device_type=forcing.device.type, enabled=False):
            alpha = activate_alpha(raw.to(dt))
            cell_alpha = {n: bands.to_bands(a, k) for n, a in alpha.items()}
            # rn as data where it is (a slice of the corrected forcing otherwise claims a
            # gradient and sends the bucket to its per-day path); a sensitivity analysis
            # that differentiates the given forcing keeps rn's gradient
            rn = forcing[..., 0].detach() if d.rn_is_data else forcing[..., 0]
            fluxes = h2mv.simulate(
                {"rn": rn.to(dt), "prec": forcing[..., 1].to(dt),
                 "tair": forcing[..., 2].to(dt)},
                cell_alpha, {"sm_max": bands.to_bands(d.sm_max.to(dt), k)},
                {n: bands.to_bands(v.to(dt), k) for n, v in d.beta.items()},
                {n: s.reshape(-1).to(dt) for n, s in (("swe", carry.swe), ("sm", carry.sm),
                                                      ("gw", carry.gw))},
                validate_inputs=False,
            )
        daily = {n: bands.band_mean(fluxes[n], k) for n in FLUX_NAMES} | {
            "fapar": alpha["fapar"]}
        last = [bands.split_bands(fluxes[n][:, -1], k) for n in ("swe", "sm", "gw")]
        carry = Carry(*last, h.to(dt), c.to(dt), alpha["fapar"][:, -1])
        return daily, alpha, carry

    @staticmethod
    def networks(net: HybridH2MV, x: Tensor, h: Tensor, c: Tensor, code: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """LSTM and head over ``[x, code]``: (raw head output, h, c at the end).

        ``x`` [cells, days, in]; the static ``code`` [cells, size] is the same every day.
        With chunks (``time_chunk``) they run a chunk at a time, the LSTM state carried
        across: checkpointed (each chunk's LSTM tape is recomputed in backward, so only one
        lives at a time; exact gradients) or truncated (the carry detached between chunks).
        The head's output, 7 numbers per cell-day, is all the bucket needs.
        """
        s = net.settings

        reason = scan_reason(net.lstm, x)
        if s.lstm_backend == "scan" and reason is not None:
            raise ValueError(f"lstm_backend='scan' cannot run: {reason}; use 'torch' or "
                             f"'auto'")
        own = reason is None and s.lstm_backend != "torch"

        def run(xs: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            if own:  # the code projected once per cell (lstm_scan's static input)
                hs, h1, c1 = lstm_scan(net.lstm, xs, h0, c0, code)
                return net.head(hs), h1, c1
            xs = torch.cat([xs, code[:, None].expand(-1, xs.shape[1], -1)], -1)
            hs, (h1, c1) = run_lstm(net.lstm, xs, h0, c0)
            return net.head(hs), h1[0], c1[0]

        chunk = s.chunk_days(x.shape[1])
        if chunk is None or chunk >= x.shape[1]:
            return run(x, h, c)
        pieces = []
        for t0 in range(0, x.shape[1], chunk):
            xs = x[:, t0:t0 + chunk]
            if s.chunk_mode == "checkpoint" and torch.is_grad_enabled():
                raw, h, c = checkpoint(run, xs, h, c, use_reentrant=False)
            else:
                raw, h, c = run(xs, h, c)
                if s.chunk_mode == "truncate":
                    h, c = h.detach(), c.detach()
            pieces.append(raw)
        return torch.cat(pieces, 1), h, c


#: Largest number of gate values (cells × days × 4H) of one cuDNN LSTM call: past 2³¹ the
#: call failed with an illegal memory access (16384 cells × 365 days × 400 gates, H200).
CUDNN_GATES = 2**31 - 1


def run_lstm(lstm: nn.LSTM, x: Tensor, h0: Tensor, c0: Tensor
             ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``lstm(x, (h0, c0))`` for a batch-first ``x`` [cells, days, in] and h0, c0 [cells, H].

    Cells are independent sequences: batches whose gates would pass :data:`CUDNN_GATES`
    run in slices of cells, with the same result. h0 and c0 are made
    contiguous (cuDNN refuses views, such as states read back from the state cache).
    """
    h0, c0 = h0[None].contiguous(), c0[None].contiguous()
    n_cells, n_days = x.shape[:2]
    step = max(1, CUDNN_GATES // (n_days * 4 * lstm.hidden_size))
    if step >= n_cells:
        return lstm(x, (h0, c0))
    parts = [lstm(x[i:i + step], (h0[:, i:i + step], c0[:, i:i + step]))
             for i in range(0, n_cells, step)]
    return (torch.cat([p[0] for p in parts]),
            (torch.cat([p[1][0] for p in parts], 1), torch.cat([p[1][1] for p in parts], 1)))


def choose_scan(net: HybridH2MV, forcing: Tensor, f_norm: Tensor | None = None) -> Scan:
    """The scan of ``net``'s settings that can run on ``forcing``.

    ``feedback_backend: fused`` where the fused op cannot run (autocast on the CPU, no
    Triton on a GPU …) is an error that says why; ``auto`` falls back to the day loop there.
    """
    s = net.settings
    if not s.state_feedback:
        return Decoupled()
    reason = net.fused_feedback_reason(forcing, f_norm)
    if s.feedback_backend == "fused" and reason is not None:
        raise ValueError(f"feedback_backend='fused' cannot run: {reason}; use 'loop' or "
                         f"'auto'")
    if s.feedback_backend == "fused" or (s.feedback_backend == "auto" and reason is None):
        return FusedFeedback()
    return DayLoop()
