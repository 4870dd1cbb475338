"""The H2MV hybrid as a LightningModule: one shared step, spin-up cache, non-finite guard.

The DataModule's normalization statistics reach the model through the CLI's argument
link (``data.stats`` → ``model.init_args.stats``) and live in the model's buffers and
hyperparameters, so a checkpoint predicts with the statistics it was trained with.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from h2mv_hybrid.constraints import PAPER_CONSTRAINTS, Constraint, as_constraints
from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.heads.base import SCORED, OutputScores, Task, require_stats
from h2mv_hybrid.model.losses import MultiConstraintLoss, Weighting
from h2mv_hybrid.model.metrics import SKILL_SCORES, BasinSkill
from h2mv_hybrid.model.networks import (
    PAPER_NETWORK,
    Carry,
    HybridH2MV,
    HybridOutput,
    HybridSettings,
)
from h2mv_hybrid.model.observers import OBSERVERS


def first_nonfinite(daily: dict[str, Tensor], cell_index: Tensor) -> str:
    """Where the first non-finite value of the daily outputs is: output, day, cell."""
    first = None
    for name, x in daily.items():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            cell, day = (int(i) for i in torch.nonzero(bad)[0])
            if first is None or day < first[1]:
                first = (name, day, int(cell_index[cell]))
    if first is None:
        return "every process output is finite (the loss itself is not)"
    return f"process output {first[0]!r}, day {first[1]} of the period, cell {first[2]}"


class H2MVHybrid(Task):
    """The H2MV hybrid model trained against declared constraints.

    Args:
        stats: normalization statistics of the DataModule (linked by the CLI).
        constraints: the loss's constraints (default: the paper's five); the CLI hands
            them to the DataModule too, so they are declared once.
        weighting: ``fixed`` weights or ``uncertainty`` (Kendall et al. 2018).
        network: the networks' sizes and how the recurrence runs
            (:class:`~h2mv_hybrid.model.networks.HybridSettings`).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        spinup_refresh_epochs: training spin-up states are cached per cell and recomputed
            every this many epochs (1: every epoch); each recomputation starts from the
            previous one's end state, so the states keep converging.
    """

    def __init__(
        self,
        stats: Normalization | None = None,
        constraints: list[Constraint] | None = None,
        weighting: Weighting = "fixed",
        network: HybridSettings = PAPER_NETWORK,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        spinup_refresh_epochs: int = 1,
    ):
        super().__init__()
        stats = require_stats(stats)
        # Through the CLI (and from its checkpoints) the settings arrive as a plain mapping.
        network = network if isinstance(network, HybridSettings) else HybridSettings(**network)
        if spinup_refresh_epochs < 1:
            raise ValueError(f"spinup_refresh_epochs: expected ≥ 1, found {spinup_refresh_epochs}")
        self.save_hyperparameters()
        self.constraints = self.declared_constraints(constraints)
        missing = [c.target for c in self.constraints if c.target not in stats.target_std]
        if missing:
            raise ValueError(
                f"constraints: expected targets served by the DataModule "
                f"({', '.join(stats.target_std)}), found {', '.join(missing)}"
            )
        self.target_std = dict(stats.target_std)
        self.settings = network
        self.configure(stats)
        self.skipped_batches = 0
        self._skip_update = False
        self._spin: dict[str, tuple[Tensor, Tensor]] = {}

    @staticmethod
    def declared_constraints(constraints: list[Constraint] | None) -> tuple[Constraint, ...]:
        """The constraints a model built with ``constraints`` uses (None: the paper's).

        The CLI hands them to the DataModule (:mod:`h2mv_hybrid.lightning_cli`).
        """
        return as_constraints(constraints) or PAPER_CONSTRAINTS

    def configure_models(self, stats: Normalization) -> None:  # noqa: D102
        self.model = HybridH2MV(len(stats.features), stats.forcing_mean, stats.forcing_std,
                                stats.static_mean, stats.static_std, self.settings)
        # observation operators the constraints compare (snow cover …), after the networks
        # so that their random initialization stays the same
        self.observers = nn.ModuleDict({c.output: OBSERVERS[c.output]()
                                        for c in self.constraints if c.output in OBSERVERS})

    def configure_losses(self) -> None:  # noqa: D102
        self.loss_fn = MultiConstraintLoss(self.constraints, self.hparams.weighting)

    def configure_metrics(self) -> None:  # noqa: D102
        self.metrics = OutputScores([c.target for c in self.constraints], rmse=False)
        # NSE, KGE, KGE′ per cell of every target observed daily (gauged runoff …)
        targets = dict.fromkeys(c.target for c in self.constraints)
        self.skill = nn.ModuleDict({f"{s}_{t}": BasinSkill() for s in SCORED for t in targets})
        self.basin_scores: dict[str, dict[str, dict[str, np.ndarray]]] = {}

    # -- spin-up -------------------------------------------------------------------------
    def _spinup(self, batch: dict[str, Tensor], stage: str) -> Carry:
        forcing, static = batch["forcing"], batch["static"]
        days = int(batch["spinup_days"])
        if stage != "train":
            return self.model.spinup(forcing[:, :days], static)
        idx = batch["cell_index"]
        refresh = self.current_epoch // self.hparams.spinup_refresh_epochs
        cached = self._spin.get("train")
        start = None
        if cached is not None and int(cached[1].numel()) > int(idx.max()):
            store, when = cached
            if bool((when[idx] == refresh).all()):
                return Carry(*self._unpack(store[idx]))
            if bool((when[idx] >= 0).all()):
                start = Carry(*self._unpack(store[idx]))  # warm start from the last spin-up
        carry = self.model.spinup(forcing[:, :days], static, start)
        self._remember(idx, carry, refresh)
        return carry

    def _unpack(self, flat: Tensor) -> tuple[Tensor, ...]:
        h = self.model.lstm_hidden
        return (flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3:3 + h], flat[:, 3 + h:3 + 2 * h],
                flat[:, 3 + 2 * h])

    def _remember(self, idx: Tensor, carry: Carry, refresh: int) -> None:
        flat = torch.cat([carry.swe[:, None], carry.sm[:, None], carry.gw[:, None], carry.h,
                          carry.c, carry.fapar[:, None]], 1)
        size = int(idx.max()) + 1
        store, when = self._spin.get("train", (flat.new_zeros(0, flat.shape[1]),
                                              idx.new_full((0,), -1)))
        if store.shape[0] < size:
            store = torch.cat([store, flat.new_zeros(size - store.shape[0], flat.shape[1])])
            when = torch.cat([when, idx.new_full((size - when.shape[0],), -1)])
        store[idx] = flat
        when[idx] = refresh
        self._spin["train"] = (store, when)

    # -- the shared step -----------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], stage: str = "predict") -> HybridOutput:
        """Spin up, then run the period of a DataModule batch (and the observers)."""
        carry = self._spinup(batch, stage)
        days = int(batch["spinup_days"])
        out = self.model(batch["forcing"][:, days:], batch["static"], carry)
        for name, observer in self.observers.items():
            out.daily[name] = observer(out.daily)
        return out

    def shared_step(self, batch: dict[str, Tensor], batch_idx: int, stage: str
                    ) -> Tensor | None:
        """Loss of the constraints; a non-finite loss is located and the batch skipped."""
        out = self(batch, stage)
        loss, parts = self.loss_fn(out.daily, batch, self.target_std)
        n = batch["forcing"].shape[0]
        if not torch.isfinite(loss):
            self.skipped_batches += 1
            # every rank says where its own non-finite value appeared
            warn = rank_zero_warn if self._world_size() == 1 else warnings.warn
            warn(
                f"{stage} batch {batch_idx}: non-finite loss ({float(loss)}); first at "
                f"{first_nonfinite(out.daily, batch['cell_index'])}; batch skipped "
                f"({self.skipped_batches} so far)"
            )
            if stage != "train":
                return None
            # A zero loss on every parameter keeps DDP's gradient all-reduce in step on all
            # ranks; the update itself is skipped everywhere in on_before_optimizer_step.
            self._skip_update = True
            return sum(p.sum() * 0.0 for p in self.parameters())
        self.log_losses(stage, loss, {f"{k}_loss": v for k, v in parts.items()}, n)
        if stage != "train":
            self._score(stage, out.daily, batch)
        return loss

    def _score(self, stage: str, daily: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        """Pearson r of every constraint; daily skill per cell of daily-observed targets."""
        n = batch["forcing"].shape[0]
        skilled = set()
        for c in self.constraints:
            pred, obs = c.pair(daily[c.output], batch[c.target], batch["month_of_day"],
                               saturate=False)
            self.metrics.update(self, stage, c.target, pred, obs, n)
            observed = batch[c.target]
            if observed.shape[1] == daily[c.output].shape[1] and c.target not in skilled:
                skilled.add(c.target)
                self.skill[f"{stage}_{c.target}"].update(daily[c.output].detach(), observed,
                                                         batch["cell_index"])

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._basin_skill("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._basin_skill("test")

    def _basin_skill(self, stage: str) -> None:
        """Per-cell NSE, KGE, KGE′ of the epoch (:attr:`basin_scores`), medians logged."""
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

    def predict_step(self, batch, batch_idx):  # noqa: D102
        out = self(batch, "predict")
        return {
            "cell_index": batch["cell_index"],
            "daily": {k: v.detach() for k, v in out.daily.items()},
            "alpha": {k: v.detach() for k, v in out.alpha.items()},
            "sm_max": out.sm_max.detach(),
            "beta": {k: float(v) for k, v in out.beta.items()},
            "observation": {k: float(v) for o in self.observers.values()
                            for k, v in o.constants().items()},
        }

    def report_lines(self, metrics: dict[str, float]) -> list[str]:
        """The end-of-fit summary (:class:`~h2mv_hybrid.callbacks.report.FitReport`)."""
        targets = sorted({k[4:-2] for k in metrics if k.endswith("_r")})
        lines = ["validation scores (monthly, or daily for daily constraints):",
                 f"  {'constraint':<10} {'pearson r':>10} {'loss (z²)':>10}"]
        for t in targets:
            lines.append(f"  {t:<10} {metrics.get(f'val_{t}_r', float('nan')):>10.3f} "
                         f"{metrics.get(f'val_{t}_loss', float('nan')):>10.3f}")
        if "val_loss" in metrics:
            lines.append(f"  {'total':<10} {'':>10} {metrics['val_loss']:>10.3f}")
        return lines

    def _world_size(self) -> int:
        return 1 if self._trainer is None else self._trainer.world_size

    # -- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the spin-up cache, so that a resumed run continues exactly."""
        checkpoint["h2mv_spinup_cache"] = {k: (v[0].cpu(), v[1].cpu())
                                           for k, v in self._spin.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # noqa: D102
        self._spin = {k: (v[0].to(self.device), v[1].to(self.device))
                      for k, v in checkpoint.get("h2mv_spinup_cache", {}).items()}

    # -- optimisation --------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer) -> None:
        """Skip the update (on every rank) after a non-finite loss or gradient."""
        bad = [name for name, p in self.named_parameters()
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        if bad:
            self.skipped_batches += 1
            rank_zero_warn(
                f"non-finite gradient in {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''} "
                f"at step {self.global_step}; update skipped ({self.skipped_batches} so far)"
            )
        skip = torch.tensor(float(bool(bad) or self._skip_update), device=self.device)
        if self._world_size() > 1:
            skip = self.trainer.strategy.reduce(skip, reduce_op="max")
        self._skip_update = False
        if bool(skip):
            for p in self.parameters():
                p.grad = None
        if self._trainer is not None:
            self.log("skipped_batches", float(self.skipped_batches))
