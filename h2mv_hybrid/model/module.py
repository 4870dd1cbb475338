"""The H2MV hybrid as a LightningModule: one shared step, spin-up cache, non-finite guard.

The DataModule's normalization statistics reach the model through the CLI's argument
link (``data.stats`` → ``model.init_args.stats``) and live in the model's buffers and
hyperparameters, so a checkpoint predicts with the statistics it was trained with.
"""

from __future__ import annotations

import math
import warnings

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from h2mv_hybrid.constraints import PAPER_CONSTRAINTS, Constraint, as_constraints
from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.heads.base import LearningRate, OutputScores, Task, require_stats
from h2mv_hybrid.model.forensics import locate
from h2mv_hybrid.model.losses import MultiConstraintLoss, Weighting
from h2mv_hybrid.model.networks import (
    EXCHANGE_OUTPUTS,
    OUTPUT_NAMES,
    PAPER_NETWORK,
    ROUTING_OUTPUTS,
    Carry,
    HybridH2MV,
    HybridOutput,
    HybridSettings,
)
from h2mv_hybrid.model.observers import OBSERVERS
from h2mv_hybrid.model.state_cache import StateCache


class H2MVHybrid(Task):
    """The H2MV hybrid model trained against declared constraints.

    Args:
        stats: normalization statistics of the DataModule (linked by the CLI).
        constraints: the loss's constraints (default: the paper's five); the CLI hands
            them to the DataModule too, so they are declared once.
        weighting: ``fixed`` weights or ``uncertainty`` (Kendall et al. 2018).
        network: the networks' sizes and how the recurrence runs
            (:class:`~h2mv_hybrid.model.networks.HybridSettings`).
        lr: Adam learning rate, or a schedule {first epoch: rate}
            (:func:`~h2mv_hybrid.heads.base.learning_rates`).
        weight_decay: Adam weight decay.
        spinup_refresh_epochs: training spin-up states are cached per cell and recomputed
            every this many epochs (1: every epoch); each recomputation starts from the
            previous one's end state, so the states keep converging.
        spinup_cycles: run the spin-up forcing this many times, each from the previous
            end state, where no cached state exists (validation, test, prediction, the
            first training epoch): a slow groundwater store (a recession of months) is
            far from equilibrium after one year from empty.
        spinup_tolerance: with a value (mm), validation, test and prediction go on
            cycling the spin-up past ``spinup_cycles`` until no cell's total storage
            (SWE + SM + GW) changes by more than this from one cycle to the next, up to
            ``spinup_max_cycles``; the cells still drifting then are reported. None: a
            fixed ``spinup_cycles``.
        spinup_max_cycles: the most cycles a tolerance may run.
    """

    def __init__(
        self,
        stats: Normalization | None = None,
        constraints: list[Constraint] | None = None,
        weighting: Weighting = "fixed",
        network: HybridSettings = PAPER_NETWORK,
        lr: LearningRate = 1e-3,
        weight_decay: float = 0.0,
        spinup_refresh_epochs: int = 1,
        spinup_cycles: int = 1,
        spinup_tolerance: float | None = None,
        spinup_max_cycles: int = 50,
    ):
        super().__init__()
        self.check_options({"lr": lr, "weight_decay": weight_decay,
                            "spinup_refresh_epochs": spinup_refresh_epochs,
                            "spinup_cycles": spinup_cycles, "network": network,
                            "constraints": constraints, "spinup_tolerance": spinup_tolerance,
                            "spinup_max_cycles": spinup_max_cycles})
        stats = require_stats(stats)
        # Through the CLI (and from its checkpoints) the settings arrive as a plain mapping.
        network = network if isinstance(network, HybridSettings) else HybridSettings(**network)
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
        self._new_caches()
        self._spinup_warned: set[tuple[str, int]] = set()
        self.spinup_report: dict[str, float] = {}

    @staticmethod
    def declared_constraints(constraints: list[Constraint] | None) -> tuple[Constraint, ...]:
        """The constraints a model built with ``constraints`` uses (None: the paper's).

        The CLI hands them to the DataModule (:mod:`h2mv_hybrid.lightning_cli`).
        """
        return as_constraints(constraints) or PAPER_CONSTRAINTS

    @staticmethod
    def check_options(options: dict) -> None:
        """Check the numeric options (and the network's settings) by name, before any data.

        The CLI calls this right after parsing (:mod:`h2mv_hybrid.lightning_cli`), so a bad
        value is refused in seconds rather than after the store's statistics.
        """
        Task.check_options(options)
        for name in ("spinup_refresh_epochs", "spinup_cycles", "spinup_max_cycles"):
            if options.get(name) is not None and options[name] < 1:
                raise ValueError(f"{name}: expected ≥ 1, found {options[name]}")
        tol = options.get("spinup_tolerance")
        if tol is not None and not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"spinup_tolerance: expected a finite value > 0 mm (or none), "
                             f"found {tol}")
        low, high = options.get("spinup_cycles") or 1, options.get("spinup_max_cycles") or 50
        if tol is not None and high < low:
            raise ValueError(f"spinup_max_cycles: expected ≥ spinup_cycles ({low}), found "
                             f"{high}")
        network = options.get("network")
        if network is not None and not isinstance(network, HybridSettings):
            network = HybridSettings(**dict(network))
        net = network or PAPER_NETWORK
        given = options.get("constraints")
        constraints = H2MVHybrid.declared_constraints(
            None if given is None else as_constraints(
                [dict(c.get("init_args", c)) if isinstance(c, dict) else c for c in given]))
        outputs = {*OUTPUT_NAMES, *OBSERVERS, *(ROUTING_OUTPUTS if net.routing_days else ()),
                   *(EXCHANGE_OUTPUTS if net.basin_gw_export else ())}
        unknown = [f"{c.target}: {c.output!r}" for c in constraints
                   if c.signature is None and c.output not in outputs]
        if unknown:
            hint = (" (q_routed needs network.routing_days)"
                    if any("q_routed" in u for u in unknown) else "")
            raise ValueError(f"constraints: expected outputs of the hybrid "
                             f"({', '.join(sorted(outputs))}), found {', '.join(unknown)}{hint}")

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
        self.metrics = OutputScores([c.target for c in self.constraints if c.scores_series],
                                    rmse=False)
        # NSE, KGE, KGE′ per cell of every target observed daily (gauged runoff …)
        self.configure_skill([c.target for c in self.constraints])

    # -- spin-up and cached states ---------------------------------------------------------
    def _new_caches(self) -> None:
        history = (self.settings.routing_days or 1) - 1
        k = self.settings.elevation_bands
        self._spin = StateCache(self.model.lstm_hidden, history, k)
        self._windows = StateCache(self.model.lstm_hidden, history, k)
        self._windows_refresh = -1
        # the equilibrium states a spin-up with a tolerance found, per evaluation period
        # (prediction runs over the test period): the next one starts from them
        self._equilibria = {p: StateCache(self.model.lstm_hidden, history, k)
                            for p in ("val", "test")}

    def _spinup(self, batch: dict[str, Tensor], stage: str) -> tuple[Carry, Tensor | None]:
        """The state the period (or window) of a batch starts from, and its runoff history.

        Validation, test and prediction spin up from empty storages. Training spins up from
        the cached spin-up state (recomputed every ``spinup_refresh_epochs``, each time
        from the previous one); a random window warms up from the state cached on its
        state day (:meth:`cache_window_states`).
        """
        forcing, static = batch["forcing"], batch["static"]
        days = int(batch["spinup_days"])
        if stage != "train":
            if self.hparams.get("spinup_tolerance") is not None:
                return self.converged_spinup(forcing[:, :days], static, batch["cell_index"],
                                             stage)
            return self.cycled_spinup(forcing[:, :days], static)
        idx = batch["cell_index"]
        if "state_slot" in batch:
            if not self._windows.holds(idx):
                raise RuntimeError("a training window arrived before the window states were "
                                   "cached (on_train_epoch_start runs cache_window_states)")
            start = self._windows.read(idx, int(batch["state_slot"]))
            return self.model.spinup_state(forcing[:, :days], static, *start)
        refresh = self.current_epoch // self.hparams.spinup_refresh_epochs
        if self._spin.holds(idx, refresh):
            return self._spin.read(idx)
        if self._spin.holds(idx):
            state = self.model.spinup_state(forcing[:, :days], static, *self._spin.read(idx))
        else:
            state = self.cycled_spinup(forcing[:, :days], static)
        self._spin.write(idx, self._spin.pack(*state)[:, None], refresh)
        return state

    def cycled_spinup(self, forcing: Tensor, static: Tensor, cycles: int | None = None
                      ) -> tuple[Carry, Tensor | None]:
        """The state after ``cycles`` runs of the spin-up days from empty storages.

        Each run starts from the previous one's end state; ``cycles`` defaults to
        ``spinup_cycles``.
        """
        state: tuple = (None, None)
        for _ in range(self.hparams.spinup_cycles if cycles is None else cycles):
            state = self.model.spinup_state(forcing, static, *state)
        return state

    @staticmethod
    def _storage(carry: Carry) -> Tensor:
        """Water stored per cell and elevation band, mm [cells, bands] (float64)."""
        n = carry.h.shape[0]
        return (carry.swe + carry.sm + carry.gw).double().reshape(n, -1)

    def converged_spinup(self, forcing: Tensor, static: Tensor, cells: Tensor, stage: str
                         ) -> tuple[Carry, Tensor | None]:
        """Cycle the spin-up days until the storages stop drifting (``spinup_tolerance``).

        At least ``spinup_cycles`` and at most ``spinup_max_cycles`` cycles; each cycle
        starts from the previous one's end, so k cycles from empty stores give exactly
        :meth:`cycled_spinup` (k). The state reached is kept per cell and period
        (validation; test and prediction) and saved with checkpoints: the next spin-up of
        the same cells and period starts from it, and stops as soon as one cycle changes
        no storage by more than the tolerance. Cells still drifting after the last cycle
        are reported once per stage and epoch; the last check is kept in
        ``spinup_report``.
        """
        tol = float(self.hparams.spinup_tolerance)
        low, high = self.hparams.spinup_cycles, self.hparams.spinup_max_cycles
        state: tuple = (None, None)
        total, drift = None, None
        cache = self._equilibria["val" if stage == "val" else "test"]
        if cache.holds(cells):
            # Warm start from the equilibrium of the previous epoch (or of the checkpoint):
            # the weights moved a little, so a few cycles reach the new one.
            state = cache.read(cells)
            total = self._storage(state[0])
            low = 1
        for k in range(1, high + 1):
            state = self.model.spinup_state(forcing, static, *state)
            new = self._storage(state[0])
            drift = None if total is None else (new - total).abs().amax(1)
            total = new
            if k >= low and drift is not None and float(drift.max()) <= tol:
                break
        worst = float("nan") if drift is None else float(drift.max())
        bad = 0 if drift is None else int((drift > tol).sum())
        cache.write(cells, cache.pack(*state)[:, None], 0)
        self.spinup_report = {"cycles": k, "max_drift_mm": worst, "drifting_cells": bad}
        key = (stage, self.current_epoch if self._trainer is not None else -1)
        if bad and key not in self._spinup_warned:
            self._spinup_warned.add(key)
            cell = int(cells[int(drift.argmax())])
            rank_zero_warn(
                f"spin-up ({stage}): {bad} of {len(drift)} cells still change their storage "
                f"by more than spinup_tolerance = {tol:g} mm per cycle after {k} cycles "
                f"(worst {worst:.3g} mm, cell {cell}); raise spinup_max_cycles or "
                f"data.spinup_years")
        return state

    def cache_window_states(self, loader, every: int, refresh: int) -> None:
        """Cache the states of a continuous run of the training period.

        The whole training period (spin-up included) of every training cell runs without
        gradient; its state is cached every ``every`` days from its first day.

        Slot k holds the state at the start of day k · ``every`` of the batch's forcing;
        the run starts from the state the previous refresh cached one spin-up later (the
        same season), so that the storages keep converging from epoch to epoch; the first
        refresh starts from ``spinup_cycles − 1`` runs of the spin-up days.
        """
        cache = self._windows
        with torch.no_grad():
            for batch in loader:
                forcing = batch["forcing"].to(self.device)
                static = batch["static"].to(self.device)
                idx = batch["cell_index"].to(self.device)
                n_days, spin = forcing.shape[1], int(batch["spinup_days"])
                n_slots = (n_days - 1) // every + 1
                state: tuple = (None, None)
                if cache.holds(idx) and cache.values.shape[1] == n_slots:
                    state = cache.read(idx, min(n_slots - 1, spin // every))
                if state[0] is None:  # the first refresh: cycles of the spin-up year
                    state = self.cycled_spinup(forcing[:, :spin], static,
                                               self.hparams.spinup_cycles - 1)
                    if state[0] is None:
                        state = (self.model.initial_carry(len(idx), self.device),
                                 self.model.initial_history(len(idx), self.device))
                rows = []
                for k in range(n_slots):
                    rows.append(cache.pack(*state))
                    state = self.model.spinup_state(
                        forcing[:, k * every:(k + 1) * every], static, *state)
                cache.write(idx, torch.stack(rows, 1), refresh)
        self._windows_refresh = refresh

    def on_train_epoch_start(self) -> None:
        """With random training windows, (re)cache the window states when due."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer else None
        windows = getattr(dm, "windows", None)
        if windows is None:
            return
        refresh = self.current_epoch // self.hparams.spinup_refresh_epochs
        if refresh != self._windows_refresh:
            self.cache_window_states(dm.state_dataloader(), windows.state_every_days, refresh)

    # -- the shared step -----------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], stage: str = "predict") -> HybridOutput:
        """Spin up, then run the period of a DataModule batch (and the observers)."""
        carry, history = self._spinup(batch, stage)
        self._period_start = carry  # what a non-finite loss is traced from (forensics)
        days = int(batch["spinup_days"])
        out = self.model(batch["forcing"][:, days:], batch["static"], carry, history)
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
                f"{locate(out, batch, self._period_start)}; batch skipped "
                f"({self.skipped_batches} so far)"
            )
            if stage != "train":
                # The epoch's score is then inf: never a best checkpoint, and early
                # stopping ends the fit (the key is logged, so callbacks that monitor it
                # do not fail when every batch is non-finite).
                self.log(f"{stage}_loss", torch.tensor(float("inf"), device=loss.device),
                         batch_size=n, on_step=False, on_epoch=True, sync_dist=True)
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
            if not c.scores_series:
                continue
            pred, obs = c.pair(daily[c.output], batch[c.target], batch["month_of_day"],
                               saturate=False)
            self.metrics.update(self, stage, c.target, pred, obs, n)
            observed = batch[c.target]
            if observed.shape[1] == daily[c.output].shape[1] and c.target not in skilled:
                skilled.add(c.target)
                self.update_skill(stage, c.target, daily[c.output], observed,
                                  batch["cell_index"])

    def predict_step(self, batch, batch_idx):  # noqa: D102
        out = self(batch, "predict")
        return {
            "cell_index": batch["cell_index"],
            "daily": {k: v.detach() for k, v in out.daily.items()},
            "alpha": {k: v.detach() for k, v in out.alpha.items()},
            "sm_max": out.sm_max.detach(),
            # per-cell coefficients: routing, forcing corrections, the groundwater
            # export, and β where one per cell is learned
            "cells": {**{k: v.detach() for k, v in (out.routing or {}).items()},
                      **{k: v.detach() for k, v in (out.corrections or {}).items()},
                      **{k: v.detach() for k, v in (out.exchange or {}).items()},
                      **{f"beta_{k}": v.detach() for k, v in out.beta.items() if v.dim()}},
            "beta": {k: float(v) for k, v in out.beta.items() if not v.dim()},
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
        """Keep the cached states, so that a resumed run continues exactly."""
        super().on_save_checkpoint(checkpoint)
        spin = self._spin.to_checkpoint()
        checkpoint["h2mv_spinup_cache"] = {} if spin is None else {"train": spin}
        checkpoint["h2mv_window_states"] = (self._windows.to_checkpoint(),
                                            self._windows_refresh)
        checkpoint["h2mv_equilibria"] = {p: c.to_checkpoint()
                                         for p, c in self._equilibria.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # noqa: D102
        self._new_caches()
        self._spin.from_checkpoint(checkpoint.get("h2mv_spinup_cache", {}).get("train"),
                                   self.device)
        saved, self._windows_refresh = checkpoint.get("h2mv_window_states", (None, -1))
        self._windows.from_checkpoint(saved, self.device)
        for period, saved in checkpoint.get("h2mv_equilibria", {}).items():
            self._equilibria[period].from_checkpoint(saved, self.device)

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
