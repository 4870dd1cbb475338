"""The H2MV hybrid as a LightningModule: one shared step, spin-up cache, non-finite guard.

The DataModule's normalization statistics reach the model through the CLI's argument
link (``data.stats`` → ``model.init_args.stats``) and live in the model's buffers and
hyperparameters, so a checkpoint predicts with the statistics it was trained with.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.model.losses import (
    PAPER_CONSTRAINTS,
    Constraint,
    MultiConstraintLoss,
    Weighting,
    align,
    anomalies,
)
from h2mv_hybrid.model.metrics import NanPearson
from h2mv_hybrid.model.networks import (
    Carry,
    ChunkMode,
    FeedbackBackend,
    HybridH2MV,
    HybridOutput,
)


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


class H2MVHybrid(L.LightningModule):
    """The H2MV hybrid model trained against declared constraints.

    Args:
        stats: normalization statistics of the DataModule (linked by the CLI).
        constraints: the loss's constraints (default: the paper's five).
        weighting: ``fixed`` weights or ``uncertainty`` (Kendall et al. 2018).
        static_hidden: width of the static module's hidden layer (paper: 150).
        code_size: size of the static code (paper: 12).
        lstm_hidden: LSTM hidden size (paper: 100).
        state_feedback: the paper's configuration (storages fed back to the LSTM daily);
            False: one whole-sequence LSTM, then the fused bucket (faster; see docs).
        sm_max_floor: smallest SM_max, mm.
        sm_max_scale: scale of the SM_max softplus, mm.
        beta_init: initial β (snow, baseflow).
        state_scale: storages enter the LSTM as log1p(storage / state_scale).
        time_chunk: days per chunk of gradient checkpointing / truncation (None: off).
        chunk_mode: ``checkpoint`` (exact) or ``truncate`` (truncated back-propagation).
        feedback_backend: the state-feedback recurrence as one fused op with a hand-written
            backward (``fused``; CPU, no autocast), day by day with autograd (``loop``; any
            device and precision), or ``auto`` (fused where it can run).
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
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        spinup_refresh_epochs: int = 1,
    ):
        super().__init__()
        if stats is None:
            raise ValueError(
                "stats: expected the DataModule's normalization statistics (the CLI links "
                "data.stats to model.init_args.stats), found None"
            )
        if spinup_refresh_epochs < 1:
            raise ValueError(f"spinup_refresh_epochs: expected ≥ 1, found {spinup_refresh_epochs}")
        self.save_hyperparameters()
        self.constraints = tuple(constraints or PAPER_CONSTRAINTS)
        missing = [c.target for c in self.constraints if c.target not in stats.target_std]
        if missing:
            raise ValueError(
                f"constraints: expected targets served by the DataModule "
                f"({', '.join(stats.target_std)}), found {', '.join(missing)}"
            )
        self.model = HybridH2MV(
            len(stats.features), stats.forcing_mean, stats.forcing_std, stats.static_mean,
            stats.static_std, static_hidden, code_size, lstm_hidden, state_feedback,
            sm_max_floor, sm_max_scale, beta_init, state_scale, time_chunk, chunk_mode,
            feedback_backend,
        )
        self.loss_fn = MultiConstraintLoss(self.constraints, weighting)
        self.target_std = dict(stats.target_std)
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({c.target: NanPearson() for c in self.constraints})
            for stage in ("val", "test")
        })
        self.skipped_batches = 0
        self._skip_update = False
        self._spin: dict[str, tuple[Tensor, Tensor]] = {}

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
        """Spin up, then run the period of a DataModule batch."""
        carry = self._spinup(batch, stage)
        days = int(batch["spinup_days"])
        return self.model(batch["forcing"][:, days:], batch["static"], carry)

    def _shared_step(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> Tensor | None:
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
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=n,
                 on_step=stage == "train", on_epoch=True, sync_dist=True)
        for target, value in parts.items():
            self.log(f"{stage}_{target}_loss", value, batch_size=n, on_epoch=True,
                     on_step=False, sync_dist=True)
        if stage in self.metrics:
            for c in self.constraints:
                pred, obs = align(out.daily[c.output], batch[c.target].to(
                    out.daily[c.output].dtype), c.aggregation, batch["month_of_day"])
                ok = ~torch.isnan(obs)
                if c.anomaly:
                    pred, obs = anomalies(pred, torch.where(ok, obs, 0), ok)
                obs = torch.where(ok, obs, torch.nan)
                metric = self.metrics[stage][c.target]
                metric.update(pred.detach(), obs)  # every rank, every batch (DDP-safe)
                self.log(f"{stage}_{c.target}_r", metric, on_epoch=True, on_step=False,
                         batch_size=n)
        return loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._shared_step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx):  # noqa: D102
        return self._shared_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):  # noqa: D102
        return self._shared_step(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx):  # noqa: D102
        out = self(batch, "predict")
        return {
            "cell_index": batch["cell_index"],
            "daily": {k: v.detach() for k, v in out.daily.items()},
            "alpha": {k: v.detach() for k, v in out.alpha.items()},
            "sm_max": out.sm_max.detach(),
            "beta": {k: float(v) for k, v in out.beta.items()},
        }

    def report_lines(self, metrics: dict[str, float]) -> list[str]:
        """The end-of-fit summary (:class:`~h2mv_hybrid.model.report.FitReport`)."""
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

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
