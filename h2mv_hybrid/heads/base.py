"""What every model of the framework shares: the task base, its scores and sequence windows.

:class:`Task` is the LightningModule base of the hybrid (:mod:`h2mv_hybrid.model.module`)
and of every alternate head in this package, in the spirit of torchgeo's ``BaseTask``:

- a subclass checks its options, calls ``save_hyperparameters()`` and then
  :meth:`Task.configure`, which builds its parts in a fixed order:
  :meth:`~Task.configure_models`, :meth:`~Task.configure_losses`,
  :meth:`~Task.configure_metrics`;
- training, validation and test run one shared step, :meth:`Task.shared_step`, which
  returns the loss (None: skip the batch);
- :meth:`Task.log_losses` logs ``{stage}_loss`` and the loss's parts the same way for
  every model; :class:`OutputScores` keeps and logs Pearson r and RMSE per output;
- :meth:`Task.configure_skill` and :meth:`Task.update_skill` keep the per-basin NSE,
  KGE and KGE′ of daily-observed targets (gauged runoff), logged as medians and kept in
  ``basin_scores`` for the end-of-fit table, the same for every model;
- every task trains with Adam on its ``lr`` and ``weight_decay`` hyperparameters; ``lr``
  is a rate or a schedule ``{first epoch: rate}`` (:func:`learning_rates`).

The sequence-to-sequence heads read every scored day after at least ``warmup_days`` of
forcing: :func:`sequence_window` picks the days a step reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MeanSquaredError

from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.model.metrics import SKILL_SCORES, BasinSkill, NanPearson

#: Stages whose outputs are scored.
SCORED = ("val", "test")

#: A learning rate, or a schedule ``{first epoch: rate}`` that starts at epoch 0
#: (neuralhydrology's ``learning_rate`` dict: the rate holds from its epoch to the next key).
LearningRate = float | dict[int, float]


def learning_rates(lr: LearningRate) -> dict[int, float]:
    """The schedule ``{first epoch: rate}`` of ``lr`` (a rate is ``{0: rate}``), checked.

    Raises ValueError naming ``model.init_args.lr`` for a rate that is not finite and
    positive, an epoch below 0 or not whole, or a schedule without epoch 0.
    """
    where = "model.init_args.lr"
    if isinstance(lr, bool):
        raise ValueError(f"{where}: expected a rate or {{epoch: rate}}, found {lr!r}")
    if isinstance(lr, int | float):
        schedule = {0: lr}
    elif isinstance(lr, dict) and lr:
        schedule = {}
        for epoch, rate in lr.items():
            whole = isinstance(epoch, int) or (isinstance(epoch, str) and epoch.isdigit())
            if not whole or int(epoch) < 0:
                raise ValueError(f"{where}: expected epochs as whole numbers ≥ 0, found "
                                 f"{epoch!r}")
            schedule[int(epoch)] = rate
        if 0 not in schedule:
            raise ValueError(f"{where}: expected a schedule that starts at epoch 0, found "
                             f"epochs {sorted(schedule)}")
    else:
        raise ValueError(f"{where}: expected a rate or {{epoch: rate}}, found {lr!r}")
    for epoch, rate in schedule.items():
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not (
                math.isfinite(rate) and rate > 0):
            at = f" at epoch {epoch}" if isinstance(lr, dict) else ""
            raise ValueError(f"{where}: expected a finite value > 0, found {rate!r}{at}")
    return {e: float(schedule[e]) for e in sorted(schedule)}


class Task(L.LightningModule):
    """Base of every model: one shared step, the same logging, Adam."""

    @staticmethod
    def check_options(options: dict) -> None:
        """Check the optimizer's options by name (``lr``, ``weight_decay``) before any data.

        The CLI calls a model class's ``check_options`` right after parsing
        (:mod:`h2mv_hybrid.lightning_cli`), so a bad value is refused in seconds.
        """
        if options.get("lr") is not None:
            learning_rates(options["lr"])
        decay = options.get("weight_decay")
        if decay is not None and not (math.isfinite(decay) and decay >= 0):
            raise ValueError(f"model.init_args.weight_decay: expected a finite value ≥ 0, "
                             f"found {decay}")

    def configure(self, stats: Normalization) -> None:
        """Build the model's parts from the DataModule's statistics, in a fixed order.

        The order fixes the order of the random initialization: the same seed gives the
        same weights.
        """
        Task.check_options({k: self.hparams.get(k) for k in ("lr", "weight_decay")})
        self.configure_models(stats)
        self.configure_losses()
        self.configure_metrics()

    def configure_models(self, stats: Normalization) -> None:
        """Build the networks (and the buffers of their statistics)."""
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the statistics in the hyperparameters as plain data (a dict).

        LightningCLI re-parses a checkpoint's hyperparameters on resume, test and predict,
        and could not serialize the dataclass instance: it dumped the whole of it as a
        warning. :func:`require_stats` turns the dict back into :class:`Normalization`.
        """
        hparams = checkpoint.get("hyper_parameters", {})
        if isinstance(hparams.get("stats"), Normalization):
            hparams["stats"] = asdict(hparams["stats"])

    def configure_losses(self) -> None:
        """Build the loss modules, if the loss has state (learned weights)."""

    def configure_metrics(self) -> None:
        """Build the validation and test metrics."""

    def shared_step(self, batch: dict[str, Tensor], batch_idx: int, stage: str
                    ) -> Tensor | None:
        """The loss of one batch in ``stage`` (train, val, test), after logging it."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self.shared_step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx):  # noqa: D102
        return self.shared_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):  # noqa: D102
        return self.shared_step(batch, batch_idx, "test")

    def log_losses(self, stage: str, loss: Tensor, parts: dict[str, Tensor],
                   batch_size: int) -> None:
        """Log ``{stage}_loss`` (per step in training) and ``{stage}_{part}`` per epoch."""
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=batch_size,
                 on_step=stage == "train", on_epoch=True, sync_dist=True)
        for name, value in parts.items():
            self.log(f"{stage}_{name}", value, batch_size=batch_size, on_epoch=True,
                     on_step=False, sync_dist=True)

    # -- per-basin skill -----------------------------------------------------------------
    def configure_skill(self, targets: Sequence[str]) -> None:
        """Keep per-cell NSE, KGE, KGE′ of ``targets`` in validation and test."""
        self.skill = nn.ModuleDict({f"{s}_{t}": BasinSkill() for s in SCORED
                                    for t in dict.fromkeys(targets)})
        self.basin_scores: dict[str, dict[str, dict[str, np.ndarray]]] = {}

    def update_skill(self, stage: str, target: str, pred: Tensor, obs: Tensor,
                     cell_index: Tensor) -> None:
        """Add a batch's daily ``pred`` and ``obs`` [cells, days] of ``target``."""
        self.skill[f"{stage}_{target}"].update(pred.detach(), obs, cell_index)

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._basin_skill("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._basin_skill("test")

    def _basin_skill(self, stage: str) -> None:
        """Per-cell NSE, KGE, KGE′ of the epoch (``basin_scores``), medians logged."""
        if not hasattr(self, "skill"):  # a head without daily-observed targets
            return
        scores = {}
        for key, metric in self.skill.items():
            if not key.startswith(f"{stage}_") or not metric.update_called:
                continue
            target = key[len(stage) + 1:]
            # atleast_1d: torchmetrics squeezes the results of a single cell to scalars
            result = {k: np.atleast_1d(v.cpu().numpy()) for k, v in metric.compute().items()}
            metric.reset()
            scores[target] = result
            for name in SKILL_SCORES:
                self.log(f"{stage}_{target}_{name}", float(np.nanmedian(result[name]))
                         if np.isfinite(result[name]).any() else float("nan"))
        self.basin_scores[stage] = scores

    def configure_optimizers(self):
        """Adam at the schedule's first rate; with more rates, a per-epoch scheduler.

        Lightning keeps the scheduler in checkpoints, so a resumed fit goes on at the
        rate of its epoch.
        """
        schedule = learning_rates(self.hparams.lr)
        optimizer = torch.optim.Adam(self.parameters(), lr=schedule[0],
                                     weight_decay=self.hparams.weight_decay)
        if len(schedule) == 1:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, ScheduleFactor(schedule))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class ScheduleFactor:
    """``LambdaLR``'s factor of an epoch: the schedule's rate then, over its first rate."""

    def __init__(self, schedule: dict[int, float]):
        self.epochs = sorted(schedule)
        self.rates = [schedule[e] for e in self.epochs]

    def __call__(self, epoch: int) -> float:  # noqa: D102
        i = int(np.searchsorted(self.epochs, epoch, side="right")) - 1
        return self.rates[i] / self.rates[0]


class SequenceTask(Task):
    """A sequence-to-sequence head: every scored day after ``warmup_days`` of forcing.

    Its ``warmup_days`` and ``train_days`` hyperparameters set the window of a training
    step (:func:`sequence_window`); validation, test and prediction read the spin-up and
    the whole period.
    """

    def window(self, batch: dict[str, Tensor], stage: str) -> tuple[int, int | None, int]:
        """``(first day, one past the last or None, scored days)`` of a step in ``stage``."""
        return sequence_window(batch, stage, self.hparams.warmup_days, self.hparams.train_days)


class OutputScores(nn.Module):
    """Pearson r (and RMSE) of named outputs in the scored stages, DDP-safe.

    ``update`` adds a batch and logs ``{stage}_{name}_r`` (and ``_rmse``) through the
    task, as epoch aggregates.
    """

    def __init__(self, names: Sequence[str], rmse: bool = True):
        super().__init__()
        self.r = nn.ModuleDict({f"{s}_{n}": NanPearson() for s in SCORED for n in names})
        self.rmse = nn.ModuleDict({f"{s}_{n}": MeanSquaredError(squared=False)
                                   for s in SCORED for n in names}) if rmse else None

    def update(self, task: L.LightningModule, stage: str, name: str, pred: Tensor,
               obs: Tensor, batch_size: int) -> None:
        """Add one batch of ``pred`` against ``obs`` (NaN where unobserved) and log."""
        key = f"{stage}_{name}"
        pred = pred.detach()
        self.r[key].update(pred, obs)  # every rank, every batch (DDP-safe)
        task.log(f"{key}_r", self.r[key], on_epoch=True, on_step=False, batch_size=batch_size)
        if self.rmse is not None:
            ok = ~torch.isnan(obs)
            self.rmse[key].update(pred[ok], obs[ok])
            task.log(f"{key}_rmse", self.rmse[key], on_epoch=True, on_step=False,
                     batch_size=batch_size)


def scaled_rmse(pred: Tensor, obs: Tensor, std: Tensor | float, dim=None) -> Tensor:
    """RMSE of (pred − obs) / std over the observed entries (NaN obs: unobserved).

    ``dim``: reduce over these dims only (one RMSE per remaining entry); None: all.
    """
    ok = ~torch.isnan(obs)
    err = torch.where(ok, (pred - torch.nan_to_num(obs)) / std, 0.0)
    if dim is None:
        return torch.sqrt((err**2).sum() / ok.sum().clamp(min=1) + 1e-12)
    return torch.sqrt((err**2).sum(dim) / ok.sum(dim).clamp(min=1) + 1e-12)


def require_stats(stats: Normalization | dict | None) -> Normalization:
    """The DataModule's statistics (also as a checkpoint keeps them: a dict), or an error."""
    if isinstance(stats, dict):
        return Normalization(**stats)
    if stats is None:
        raise ValueError(
            "stats: expected the DataModule's normalization statistics (the CLI links "
            "data.stats to model.init_args.stats), found None"
        )
    return stats


def check_window(warmup_days: int, train_days: int) -> None:
    """The window settings of a sequence-to-sequence head are usable."""
    if warmup_days < 0 or train_days < 2:
        raise ValueError(f"warmup_days, train_days: expected ≥ 0 and ≥ 2, found "
                         f"{warmup_days}, {train_days}")


def sequence_window(batch: dict[str, Tensor], stage: str, warmup_days: int,
                    train_days: int) -> tuple[int, int | None, int]:
    """The days a step reads: ``(first, one past the last or None, scored days)``.

    Training draws one random window of ``warmup_days + train_days`` days whose scored
    part lies in the period; other stages read the spin-up and the whole period, whose
    spin-up must hold ``warmup_days``. The scored days are the window's last ones.
    A batch that is already a training window of the DataModule
    (:class:`~h2mv_hybrid.data.batches.TrainWindows`, marked by ``state_slot``) is read
    whole: its warm-up is the DataModule's.
    """
    n_days = batch["forcing"].shape[1]
    spin = int(batch["spinup_days"])
    if stage == "train" and "state_slot" in batch:
        return 0, None, n_days - spin
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
