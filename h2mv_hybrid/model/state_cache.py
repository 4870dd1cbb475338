"""Cached states of the hybrid: where a training batch starts without spinning up anew.

Two caches use this one record:

- the spin-up cache: the state of every training cell at the start of the training period,
  recomputed every ``spinup_refresh_epochs`` from the previous one (one slot per cell);
- the window cache: with random training windows
  (:class:`~h2mv_hybrid.data.batches.TrainWindows`), the states of a continuous run of
  the whole training period on every state day (one slot per state day), from which each
  window's warm-up starts.

A state is the hybrid's :class:`~h2mv_hybrid.model.scans.Carry` (storages, LSTM state,
fAPAR) and, with routing, the runoff history; it is stored flat, one row per cell and slot.
"""

from __future__ import annotations

import torch
from torch import Tensor

from h2mv_hybrid.model.scans import Carry


class StateCache:
    """States of many cells on a few days.

    ``values`` [cells, slots, width], ``when`` [cells] (the refresh each cell was last
    written in; −1: never).

    Args:
        hidden: the LSTM's hidden size.
        history: days of runoff history (K − 1 with routing, else 0).
        bands: elevation bands of the bucket (each with its own storages).
    """

    def __init__(self, hidden: int, history: int, bands: int = 1):
        self.hidden, self.history, self.bands = hidden, history, bands
        self.values: Tensor | None = None
        self.when: Tensor | None = None

    @property
    def width(self) -> int:
        """Numbers per state: SWE, SM, GW (per band), h, c, fAPAR and the history."""
        return 3 * self.bands + 1 + 2 * self.hidden + self.history

    def pack(self, carry: Carry, history: Tensor | None) -> Tensor:
        """One state per cell → [cells, width]."""
        n = carry.h.shape[0]
        parts = [carry.swe.reshape(n, -1), carry.sm.reshape(n, -1), carry.gw.reshape(n, -1),
                 carry.h, carry.c, carry.fapar[:, None]]
        if self.history:
            parts.append(history)
        return torch.cat([p.to(carry.swe.dtype) for p in parts], 1)

    def unpack(self, flat: Tensor) -> tuple[Carry, Tensor | None]:
        """[cells, width] → ``(carry, history)``."""
        h, k = self.hidden, self.bands
        st = [flat[:, i * k] if k == 1 else flat[:, i * k:(i + 1) * k] for i in range(3)]
        o = 3 * k
        carry = Carry(*st, flat[:, o:o + h], flat[:, o + h:o + 2 * h], flat[:, o + 2 * h])
        return carry, flat[:, o + 1 + 2 * h:] if self.history else None

    def write(self, idx: Tensor, states: Tensor, refresh: int) -> None:
        """Store ``states`` [cells, slots, width] of cells ``idx`` (flat cell indices)."""
        size = int(idx.max()) + 1
        if self.values is None or self.values.shape[1] != states.shape[1]:
            self.values = states.new_zeros(0, states.shape[1], states.shape[2])
            self.when = idx.new_full((0,), -1)
        if self.values.shape[0] < size:
            grow = size - self.values.shape[0]
            self.values = torch.cat([self.values, states.new_zeros(grow, *states.shape[1:])])
            self.when = torch.cat([self.when, idx.new_full((grow,), -1)])
        self.values[idx] = states
        self.when[idx] = refresh

    def holds(self, idx: Tensor, refresh: int | None = None) -> bool:
        """Whether every cell of ``idx`` has a state (of refresh ``refresh``, if given)."""
        if self.when is None or self.when.shape[0] <= int(idx.max()):
            return False
        when = self.when[idx]
        return bool((when >= 0).all() if refresh is None else (when == refresh).all())

    def read(self, idx: Tensor, slot: int = 0) -> tuple[Carry, Tensor | None]:
        """The state of cells ``idx`` in slot ``slot``."""
        assert self.values is not None
        return self.unpack(self.values[idx, slot])

    # -- checkpoints ---------------------------------------------------------------------
    def to_checkpoint(self) -> tuple[Tensor, Tensor] | None:
        """``(values, when)`` on the CPU, or None when empty."""
        if self.values is None:
            return None
        return self.values.cpu(), self.when.cpu()

    def from_checkpoint(self, saved: tuple[Tensor, Tensor] | None, device: torch.device
                        ) -> None:
        """Restore what :meth:`to_checkpoint` saved (a [cells, width] store: one slot)."""
        if saved is None:
            self.values = self.when = None
            return
        values, when = saved
        self.values = (values[:, None] if values.dim() == 2 else values).to(device)
        self.when = when.to(device)
