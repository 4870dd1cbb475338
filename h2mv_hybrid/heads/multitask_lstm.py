"""Multi-task LSTM for soil moisture in three layers and ET, with a learned water-balance residual.

After Yan et al. (2026, Sci. Rep. 16, 13824; shared/papers/
mtl-differentiable-water-balance-yan-2026-summary.txt): a shared LSTM core reads daily
meteorology (rain, temperature, radiation, humidity, pressure, wind) and the static
land-surface features; small task branches (one hidden layer each) turn its state into
soil moisture of each layer (m³ m⁻³) and ET (mm day⁻¹). Three variants share the network
and differ by the loss (``physics``):

- ``none``: the sum of the tasks' RMSEs (each on the target scaled by its training std);
- ``fixed``: plus w_phy · the RMSE of the water balance by a fixed formula,
  B = P − ET − R − ΔS, with ΔS = Σ_k d_k (θ_k,t − θ_k,t−1) the predicted storage change of
  the layers (mm day⁻¹) and R the store's runoff (``runoff``, default surface runoff);
- ``learned``: the balance closed by a second network, B = P − ET − R − ΔS − ε, where ε
  (mm day⁻¹: snow accumulation and melt, drainage to groundwater, interception storage …)
  is a small LSTM fed the same inputs and trained jointly, without any target of its own.

Single-task models are the same class with one task. The paper feeds a year of daily
forcing to the LSTM; here the LSTM runs sequence-to-sequence and every scored day is
preceded by at least ``warmup_days`` (365) days of forcing read by the same LSTM, which
gives each output the same year of history at a fraction of the cost of one 365-day
window per target day (the balance also needs consecutive days' predictions). Training
draws one window of ``warmup_days + train_days`` days per batch; validation, test and
prediction run over the spin-up and the whole period, which must therefore have a
spin-up of at least ``warmup_days``.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from torch import Tensor, nn

from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.heads.base import (
    LearningRate,
    OutputScores,
    SequenceTask,
    check_window,
    scaled_rmse,
)
from h2mv_hybrid.heads.daily_inputs import (
    PAPER_FORCINGS,
    DailyInputs,
    column_stats,
    daily_column,
    require_inputs,
)
from h2mv_hybrid.model.losses import nse_star
from h2mv_hybrid.model.lstm_scan import sequence_lstm
from h2mv_hybrid.options import check_choice
from process_layers.layered_balance import balance_residual

Physics = Literal["none", "fixed", "learned"]
TaskLoss = Literal["rmse", "nse_star"]
#: The paper's tasks: soil moisture of the three layers and daily ET (output names).
TASKS: tuple[str, ...] = ("sm_layer1", "sm_layer2", "sm_layer3", "et_daily")
_LAYER = re.compile(r"sm_layer(\d+)$")


def task_source(task: str) -> tuple[str, int]:
    """The store variable and layer a task forecasts: ``sm_layer2`` → (``sm_layers``, 2)."""
    m = _LAYER.match(task)
    return ("sm_layers", int(m.group(1))) if m else (task, 1)


def task_target(batch: dict[str, Tensor], task: str) -> Tensor:
    """The observed series of a task [cells, days] (NaN where unobserved).

    Inputs cover the forcing's days; a daily constraint (gauged runoff ``q``) covers the
    period only and is NaN-padded over the spin-up, so that every task lines up with the
    forcing.
    """
    name, layer = task_source(task)
    x = batch[name]
    x = x[..., layer - 1] if name == "sm_layers" else x
    lead = batch["forcing"].shape[1] - x.shape[1]
    if lead > 0:
        x = torch.cat([x.new_full((x.shape[0], lead), float("nan")), x], 1)
    return x


def balance_tasks(n_layers: int) -> list[str]:
    """The outputs the water balance needs: every layer's soil moisture and ET."""
    return [f"sm_layer{k}" for k in range(1, n_layers + 1)] + ["et_daily"]


class MultiTaskLSTM(SequenceTask):
    """Shared LSTM with one branch per task; the water balance through ``physics``.

    Args:
        stats: normalization statistics of the DataModule (linked by the CLI); it must
            serve the ``forcings`` that are not schema forcings, ``sm_layers`` for soil
            moisture tasks, ``et_daily`` for ET and, with physics, ``runoff``.
        tasks: outputs, among ``sm_layer<k>`` (layer k of ``sm_layers``), daily inputs
            such as ``et_daily`` and daily constraints such as gauged runoff ``q``
            (``data.targets``); default the paper's four. Physics needs every layer
            and ``et_daily``.
        physics: ``none``, ``fixed`` (P − ET − R − ΔS) or ``learned`` (− ε, a network).
        w_phy: weight of the water-balance term.
        task_weights: weight of each task's RMSE (default 1 each).
        forcings: daily meteorological inputs (schema names).
        runoff: the store's daily runoff R of the balance.
        hidden: units of the shared LSTM.
        head_hidden: units of each task branch's hidden layer.
        residual_hidden: units of the residual network's LSTM (``learned``).
        dropout: dropout on the shared LSTM's output.
        warmup_days: forcing days read before the first scored day (paper: a year of
            meteorology for every estimate).
        train_days: days scored per training window of each batch.
        loss: each task's term: ``rmse`` (of the target scaled by its training std) or
            ``nse_star`` (Kratzert et al. 2019: squared errors scaled per basin, for
            daily constraints such as gauged runoff; :func:`~h2mv_hybrid.model.losses.nse_star`).
        forget_bias: initial bias of the LSTM's forget gate (neuralhydrology's
            ``initial_forget_bias``, 3 in its CAMELS recipes: remember by default).
        lr: Adam learning rate, or a schedule {first epoch: rate}
            (:func:`~h2mv_hybrid.heads.base.learning_rates`).
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        stats: Normalization | None = None,
        tasks: list[str] | None = None,
        physics: Physics = "none",
        w_phy: float = 1.0,
        task_weights: dict[str, float] | None = None,
        forcings: list[str] | None = None,
        runoff: str = "q_surf_daily",
        hidden: int = 128,
        head_hidden: int = 64,
        residual_hidden: int = 32,
        dropout: float = 0.15,
        warmup_days: int = 365,
        train_days: int = 365,
        loss: TaskLoss = "rmse",
        forget_bias: float = 0.0,
        lr: LearningRate = 1e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        tasks = list(tasks or TASKS)
        check_choice("physics", physics, Physics)
        check_choice("loss", loss, TaskLoss)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks: expected distinct task names, found {tasks}")
        check_window(warmup_days, train_days)
        if w_phy < 0:
            raise ValueError(f"w_phy: expected ≥ 0, found {w_phy}")
        weights = dict(task_weights or {})
        if set(weights) - set(tasks):
            raise ValueError(f"task_weights: expected weights of tasks {tasks}, found "
                             f"{sorted(weights)}")
        self.forcings = tuple(forcings or PAPER_FORCINGS)
        needed = [*self.forcings, *(task_source(t)[0] for t in tasks)]
        if physics != "none":
            needed += ["sm_layers", "et_daily", runoff]
        stats = require_inputs(stats, needed)
        n_layers = len(stats.layer_thickness_mm)
        for t in tasks:
            name, layer = task_source(t)
            if name == "sm_layers" and not 1 <= layer <= n_layers:
                raise ValueError(f"tasks: {t} expected a layer in 1 … {n_layers}, found {layer}")
        if physics != "none":
            full = balance_tasks(n_layers)
            missing = [t for t in full if t not in tasks]
            if missing:
                raise ValueError(f"tasks: physics {physics!r} needs the storage of every layer "
                                 f"and ET, expected {full}, missing {missing}")
        self.save_hyperparameters()
        self.tasks = tuple(tasks)
        self.weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self.configure(stats)

    def configure_models(self, stats: Normalization) -> None:  # noqa: D102
        hp = self.hparams
        self.inputs = DailyInputs(stats, self.forcings)
        self.register_buffer("thickness", torch.tensor(stats.layer_thickness_mm))
        pairs = {t: column_stats(stats, *task_source(t)) for t in self.tasks}
        self.register_buffer("y_mean", torch.tensor([pairs[t][0] for t in self.tasks]))
        self.register_buffer("y_std", torch.tensor([pairs[t][1] for t in self.tasks]))
        self.p_std = column_stats(stats, "prec")[1]
        self.lstm = nn.LSTM(self.inputs.size, hp.hidden, batch_first=True)
        if hp.get("forget_bias"):
            with torch.no_grad():  # gate order i, f, g, o: the second quarter
                self.lstm.bias_hh_l0[hp.hidden:2 * hp.hidden] = hp.forget_bias
        self.drop = nn.Dropout(hp.dropout)
        self.heads = nn.ModuleDict({t: nn.Sequential(nn.Linear(hp.hidden, hp.head_hidden),
                                                     nn.ReLU(), nn.Linear(hp.head_hidden, 1))
                                    for t in self.tasks})
        if hp.physics == "learned":
            self.residual_lstm = nn.LSTM(self.inputs.size, hp.residual_hidden, batch_first=True)
            self.residual_head = nn.Linear(hp.residual_hidden, 1)

    def configure_metrics(self) -> None:  # noqa: D102
        self.scores = OutputScores(self.tasks)
        # per-basin NSE, KGE, KGE′ of the tasks that are store variables (gauged runoff …)
        self.skilled = tuple(t for t in self.tasks if task_source(t)[0] == t)
        self.configure_skill(self.skilled)

    # -- the networks ------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], first: int = 0, last: int | None = None
                ) -> dict[str, Tensor]:
        """Outputs in physical units over days [first, last) of the batch, each [cells, days].

        Keys: the tasks, and ``wb_residual`` (ε, mm day⁻¹) with ``physics: learned``.
        """
        x = self.inputs(batch)[:, first:last]
        h = sequence_lstm(self.lstm, x)
        h = self.drop(h)
        out = {t: self.y_mean[i] + self.y_std[i] * self.heads[t](h).squeeze(-1)
               for i, t in enumerate(self.tasks)}
        if self.hparams.physics == "learned":
            r = sequence_lstm(self.residual_lstm, x)
            out["wb_residual"] = self.p_std * self.residual_head(r).squeeze(-1)
        return out

    def theta(self, out: dict[str, Tensor]) -> Tensor:
        """Predicted soil moisture of every layer [cells, days, layers]."""
        return torch.stack([out[f"sm_layer{k}"] for k in range(1, len(self.thickness) + 1)], -1)

    # -- the loss ----------------------------------------------------------------------
    def losses(self, out: dict[str, Tensor], batch: dict[str, Tensor], first: int,
               last: int | None, scored: int) -> dict[str, Tensor]:
        """Task RMSEs (scaled), the balance term and their total over the scored days.

        ``out`` covers days [first, last) of the batch; the last ``scored`` days count.
        """
        terms = {}
        data = 0.0
        for i, t in enumerate(self.tasks):
            y = task_target(batch, t)[:, first:last][:, -scored:]
            pred = out[t][:, -scored:]
            if self.hparams.get("loss", "rmse") == "nse_star":
                key = f"{task_source(t)[0]}_basin_std"
                if key not in batch:
                    raise ValueError(f"loss: nse_star expected the per-basin std of task {t} "
                                     f"(a daily target of data.targets), found none")
                terms[f"nse_star_{t}"] = nse_star(pred, y, batch[key], float(self.y_std[i]))[0]
                data = data + self.weights[t] * terms[f"nse_star_{t}"]
                continue
            terms[f"rmse_{t}"] = scaled_rmse(pred, y, self.y_std[i])
            data = data + self.weights[t] * terms[f"rmse_{t}"]
        total = data
        if self.hparams.physics != "none":
            b = self.balance(out, batch, first, last)[:, -(scored - 1):]
            terms["phy"] = torch.sqrt(((b / self.p_std) ** 2).mean() + 1e-12)
            total = total + self.hparams.w_phy * terms["phy"]
        terms["loss"] = total
        return terms

    def balance(self, out: dict[str, Tensor], batch: dict[str, Tensor], first: int,
                last: int | None, with_residual: bool = True) -> Tensor:
        """The water balance of the outputs, mm day⁻¹ [cells, days − 1] (see module doc)."""
        prec = daily_column(batch, "prec")[:, first:last]
        runoff = batch[self.hparams.runoff][:, first:last]
        eps = out.get("wb_residual") if with_residual else None
        return balance_residual(prec, out["et_daily"], runoff, self.theta(out), self.thickness,
                             eps)

    # -- steps -------------------------------------------------------------------------
    def shared_step(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> Tensor:  # noqa: D102
        first, last, scored = self.window(batch, stage)
        out = self(batch, first, last)
        terms = self.losses(out, batch, first, last, scored)
        n = batch["forcing"].shape[0]
        self.log_losses(stage, terms["loss"], {k: v for k, v in terms.items() if k != "loss"},
                        n)
        if stage != "train":
            self._score(stage, out, batch, scored)
        return terms["loss"]

    def _score(self, stage: str, out: dict[str, Tensor], batch: dict[str, Tensor],
               scored: int) -> None:
        n = batch["forcing"].shape[0]
        for t in self.tasks:
            obs = task_target(batch, t)[:, -scored:]
            self.scores.update(self, stage, t, out[t][:, -scored:], obs, n)
            if t in self.skilled:
                self.update_skill(stage, t, out[t][:, -scored:], obs, batch["cell_index"])
        if self.has_balance and self.hparams.runoff in batch:
            b = self.balance(out, batch, 0, None, with_residual=False)[:, -(scored - 1):]
            self.log(f"{stage}_balance_mae", b.abs().mean(), on_epoch=True, on_step=False,
                     batch_size=n, sync_dist=True)

    @property
    def has_balance(self) -> bool:
        """Whether the tasks cover every layer and ET (their balance can be computed)."""
        return all(t in self.tasks for t in balance_tasks(len(self.thickness)))

    def predict_step(self, batch, batch_idx):  # noqa: D102
        _, _, scored = self.window(batch, "predict")
        out = {k: v[:, -scored:].detach() for k, v in self(batch).items()}
        meta = {}
        for t in self.tasks:
            name, layer = task_source(t)
            meta[t] = (("m3 m-3", f"estimated volumetric soil moisture, layer {layer}")
                       if name == "sm_layers" else ("mm day-1", f"estimated {name}"))
            meta[t] = (*meta[t], "Yan et al. 2026 (multi-task LSTM)")
        if "wb_residual" in out:
            meta["wb_residual"] = ("mm day-1", "learned water-balance residual ε",
                                   "Yan et al. 2026 (differentiable water balance)")
        return {"cell_index": batch["cell_index"], "daily": out, "metadata": meta}

    def report_lines(self, metrics: dict[str, float]) -> list[str]:
        """The end-of-fit summary (:class:`~h2mv_hybrid.callbacks.report.FitReport`)."""
        lines = [f"validation scores (multi-task LSTM, physics: {self.hparams.physics}):",
                 f"  {'task':<12} {'r':>8} {'RMSE':>10}"]
        for t in self.tasks:
            r, e = metrics.get(f"val_{t}_r"), metrics.get(f"val_{t}_rmse")
            if r is not None and e is not None:
                lines.append(f"  {t:<12} {r:>8.3f} {e:>10.4f}")
        if "val_balance_mae" in metrics:
            lines.append(f"  |P − ET − R − ΔS| {metrics['val_balance_mae']:.3f} mm/day")
        if "val_phy" in metrics:
            lines.append(f"  balance term {metrics['val_phy']:.4f}")
        return lines
