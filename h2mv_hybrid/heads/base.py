"""What the pure-learning heads share: the Lightning steps, the optimizer, the sequence windows.

The LSTM heads (PHY-LSTM, multi-task LSTM, CNN-LSTM) compute their loss and scores in one
``_shared_step(batch, stage)`` and train with Adam on ``hparams.lr`` and
``hparams.weight_decay``; :class:`LSTMHead` wires those once. The sequence-to-sequence
heads read every scored day after at least ``warmup_days`` of forcing:
:func:`sequence_window` picks the days a step reads.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class LSTMHead(L.LightningModule):
    """Training, validation and test steps through ``_shared_step``; Adam."""

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):  # noqa: D102
        return self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):  # noqa: D102
        return self._shared_step(batch, "test")

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)


def sequence_window(batch: dict[str, Tensor], stage: str, warmup_days: int,
                    train_days: int) -> tuple[int, int | None, int]:
    """The days a step reads: ``(first, one past the last or None, scored days)``.

    Training draws one random window of ``warmup_days + train_days`` days whose scored
    part lies in the period; other stages read the spin-up and the whole period, whose
    spin-up must hold ``warmup_days``. The scored days are the window's last ones.
    """
    n_days = batch["forcing"].shape[1]
    spin = int(batch["spinup_days"])
    if stage != "train":
        if spin < warmup_days:
            raise ValueError(f"data.spinup_years: expected at least {warmup_days} days of "
                             f"forcing before the period (warmup_days), found {spin}")
        return 0, None, n_days - spin
    lo = max(spin, warmup_days)
    if lo + 2 > n_days:
        raise ValueError(f"data: expected more than {lo + 2} days in a training batch "
                         f"(warm-up {warmup_days} days), found {n_days}")
    length = min(train_days, n_days - lo)
    start = int(torch.randint(lo, n_days - length + 1, ()).item())
    return start - warmup_days, start + length, length
