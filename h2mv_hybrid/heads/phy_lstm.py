"""Pure-LSTM heads forecasting surface soil moisture: LSTM, PHY-LSTM and PHYs-LSTM.

After Li et al. (shared/papers/phy-lstm-monotonic-water-balance-loss.txt, §2.2–2.4): one
LSTM layer (128 units, dropout 0.15) reads a window of ``seq_len`` (7) days of
meteorology and the static attributes and forecasts the volumetric soil moisture of one
layer (layer 1, 0–7 cm) on the window's last day. Three variants differ only by the loss:

- ``physics="none"`` (LSTM): RMSE (eq. 9);
- ``physics="surface"`` (PHY-LSTM): w₁ · RMSE + w₂ · L_phy (eq. 8) with ΔW of eq. 10;
- ``physics="deep"`` (PHYs-LSTM): the same with ΔW^s of eq. 11 (deep-soil change added).

Training draws ``samples_per_cell`` random target days per cell of each batch (point
sampling, Fang and Shen 2020); validation, test and prediction use every day of the
period. The window ends on the target day: the day's meteorology is an input, as for a
forecast driven by forecast meteorology (without it the direction of the day's change,
which the physical loss asks for, cannot be known). Both loss terms are computed on
soil moisture divided by its training standard deviation, so w₁ : w₂ means the same
whatever the units. It is a LightningModule for the same CLI, checkpoints, CV and
prediction writers as the hybrid model (``--model`` picks the class).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.data.schema import FORCING_NAMES
from h2mv_hybrid.heads.base import SCORED, LearningRate, OutputScores, Task, scaled_rmse
from h2mv_hybrid.heads.daily_inputs import (
    PAPER_FORCINGS,
    DailyInputs,
    column_stats,
    require_inputs,
)
from h2mv_hybrid.model.lstm_scan import sequence_lstm
from h2mv_hybrid.model.metrics import Share
from h2mv_hybrid.options import check_choice
from process_layers import monotonic

Physics = Literal["none", "surface", "deep"]
Direction = Literal["change", "level"]
#: Daily land-surface fields of ΔW (eq. 10): ET, surface runoff, SWE.
BALANCE_INPUTS: tuple[str, ...] = ("et_daily", "q_surf_daily", "swe_daily")
#: Windows per LSTM call when a whole period is forecast (bounds the memory).
EVAL_CHUNK = 16384


class SoilMoistureLSTM(Task):
    """LSTM forecasting one soil layer's moisture; PHY-LSTM / PHYs-LSTM through ``physics``.

    Args:
        stats: normalization statistics of the DataModule (linked by the CLI); the
            DataModule must serve ``sm_layers``, the non-core ``forcings`` and, with
            physics, ``et_daily``, ``q_surf_daily`` and ``swe_daily`` as ``inputs``.
        physics: ``none`` (LSTM), ``surface`` (PHY-LSTM, eq. 10) or ``deep``
            (PHYs-LSTM, eq. 11).
        w_data: w₁, the weight of the RMSE (eq. 8).
        w_phy: w₂, the weight of the monotonic loss (eq. 8); unused without physics.
        direction: the expected direction of the change: ``change`` (eq. 12, the paper's:
            sign(ΔW_t − ΔW_{t−1})) or ``level`` (sign(ΔW_t); see docs/phy_lstm.md).
        forcings: daily meteorological inputs (schema names).
        layer: the forecast layer of ``sm_layers`` (1: the surface layer).
        hidden: LSTM units (paper: 128).
        dropout: dropout on the LSTM output (paper: 0.15).
        seq_len: days per input window, the target day included (paper: 7).
        samples_per_cell: target days drawn per cell and training batch.
        lr: Adam learning rate (paper: 1e-3), or a schedule {first epoch: rate}
            (:func:`~h2mv_hybrid.heads.base.learning_rates`).
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        stats: Normalization | None = None,
        physics: Physics = "none",
        w_data: float = 1.0,
        w_phy: float = 1.0,
        direction: Direction = "change",
        forcings: list[str] | None = None,
        layer: int = 1,
        hidden: int = 128,
        dropout: float = 0.15,
        seq_len: int = 7,
        samples_per_cell: int = 64,
        lr: LearningRate = 1e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        check_choice("physics", physics, Physics)
        check_choice("direction", direction, Direction)
        if seq_len < 1 or samples_per_cell < 1:
            raise ValueError(f"seq_len, samples_per_cell: expected ≥ 1, found {seq_len}, "
                             f"{samples_per_cell}")
        if w_data < 0 or w_phy < 0:
            raise ValueError(f"w_data, w_phy: expected ≥ 0, found {w_data}, {w_phy}")
        self.forcings = tuple(forcings or PAPER_FORCINGS)
        needed = ["sm_layers", *self.forcings]
        if physics != "none":
            needed += list(BALANCE_INPUTS)
        stats = require_inputs(stats, needed)
        self.save_hyperparameters()
        n_layers = len(stats.input_mean["sm_layers"])
        if not 1 <= layer <= n_layers:
            raise ValueError(f"layer: expected 1 … {n_layers} (layers of sm_layers), found "
                             f"{layer}")
        if physics == "deep" and n_layers < 2:
            raise ValueError("physics: 'deep' needs deep soil layers below the forecast "
                             f"layer, found {n_layers} layer(s) in sm_layers")
        self.configure(stats)

    def configure_models(self, stats: Normalization) -> None:  # noqa: D102
        hp = self.hparams
        self.inputs = DailyInputs(stats, self.forcings)
        self.register_buffer("thickness", torch.tensor(stats.layer_thickness_mm))
        self.y_mean, self.y_std = column_stats(stats, "sm_layers", hp.layer)
        self.lstm = nn.LSTM(self.inputs.size, hp.hidden, batch_first=True)
        self.drop = nn.Dropout(hp.dropout)
        self.head = nn.Linear(hp.hidden, 1)

    def configure_metrics(self) -> None:  # noqa: D102
        self.scores = OutputScores(["sm"])
        self.inconsistent = nn.ModuleDict({s: Share() for s in SCORED})

    # -- inputs ------------------------------------------------------------------------
    def _check_window(self, batch: dict[str, Tensor]) -> int:
        days = int(batch["spinup_days"])
        if days < self.hparams.seq_len - 1:
            raise ValueError(
                f"data.spinup_years: expected at least {self.hparams.seq_len - 1} days "
                f"before the period for the first {self.hparams.seq_len}-day window, found "
                f"{days}"
            )
        return days

    def forecast(self, x: Tensor, cells: Tensor, days: Tensor) -> Tensor:
        """Normalized forecasts [samples] of (cell, target day) pairs; inputs [cells, days, F]."""
        n = self.hparams.seq_len
        windows = x.unfold(1, n, 1)  # [cells, days − n + 1, F, n]: window i ends on day i + n − 1
        xw = windows[cells, days - (n - 1)].transpose(1, 2)  # [samples, n, F]
        out = sequence_lstm(self.lstm, xw)
        return self.head(self.drop(out[:, -1])).squeeze(-1)

    def forecast_period(self, batch: dict[str, Tensor]) -> Tensor:
        """Soil moisture (m³ m⁻³) on every day of the period [cells, period days]."""
        start = self._check_window(batch)
        x = self.inputs(batch)
        n_cells, n_days = x.shape[:2]
        cells = torch.arange(n_cells, device=x.device).repeat_interleave(n_days - start)
        days = torch.arange(start, n_days, device=x.device).repeat(n_cells)
        parts = [self.forecast(x, cells[i:i + EVAL_CHUNK], days[i:i + EVAL_CHUNK])
                 for i in range(0, len(cells), EVAL_CHUNK)]
        pred = torch.cat(parts).reshape(n_cells, n_days - start)
        return self.y_mean + self.y_std * pred

    # -- physics -----------------------------------------------------------------------
    def water_change(self, batch: dict[str, Tensor]) -> Tensor:
        """ΔW (eq. 10) or ΔW^s (eq. 11) over the window's days, mm day⁻¹ [cells, days]."""
        prec = batch["forcing"][..., FORCING_NAMES.index("prec")]
        dw = monotonic.surface_water_change(prec, batch["et_daily"], batch["q_surf_daily"],
                                            batch["swe_daily"])
        if self.hparams.physics == "deep":
            deep = monotonic.deep_storage(batch["sm_layers"], self.thickness,
                                          self.hparams.layer)
            dw = monotonic.surface_water_change_deep(dw, deep)
        return dw

    def target(self, batch: dict[str, Tensor]) -> Tensor:
        """Observed soil moisture of the forecast layer, m³ m⁻³ [cells, days]."""
        return batch["sm_layers"][..., self.hparams.layer - 1]

    def losses(self, pred: Tensor, obs: Tensor, prev: Tensor, direction: Tensor | None,
               keep: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(total, rmse, phy)``: eqs 8, 9 and 14 on soil moisture scaled by its std."""
        rmse = scaled_rmse(pred, obs, self.y_std)
        if direction is None:
            return rmse, rmse, torch.zeros_like(rmse)
        penalty = monotonic.monotonic_penalty(pred, prev, direction, keep) / self.y_std
        phy = penalty.sum() / max(penalty.numel(), 1)
        return self.hparams.w_data * rmse + self.hparams.w_phy * phy, rmse, phy

    # -- the shared step -----------------------------------------------------------------
    def shared_step(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> Tensor:  # noqa: D102
        start = self._check_window(batch)
        y = self.target(batch)
        physics = self.hparams.physics != "none"
        direction = keep = None
        if physics:
            direction = monotonic.expected_direction(self.water_change(batch),
                                                     self.hparams.direction)
            keep = monotonic.observed_agreement(direction, y)
        n_cells, n_days = y.shape
        if stage == "train":
            k = self.hparams.samples_per_cell
            cells = torch.arange(n_cells, device=y.device).repeat_interleave(k)
            days = torch.randint(start, n_days, (n_cells * k,), device=y.device)
            pred = self.y_mean + self.y_std * self.forecast(self.inputs(batch), cells, days)
            pick = lambda a: None if a is None else a[cells, days]  # noqa: E731
            prev = y[cells, days - 1]
            loss, rmse, phy = self.losses(pred, y[cells, days], prev, pick(direction),
                                          pick(keep))
        else:
            pred = self.forecast_period(batch)
            obs = y[:, start:]
            prev = y[:, start - 1:-1]
            loss, rmse, phy = self.losses(pred, obs, prev,
                                          None if direction is None else direction[:, start:],
                                          None if keep is None else keep[:, start:])
            self._score(stage, pred, obs, batch)
        self.log_losses(stage, loss, {"rmse_loss": rmse, **({"phy_loss": phy} if physics else {})},
                        n_cells)
        return loss

    def _score(self, stage: str, pred: Tensor, obs: Tensor, batch: dict[str, Tensor]) -> None:
        """r, RMSE (m³ m⁻³) and the inconsistency share (eq. 19, w.r.t. eq. 10 ΔW)."""
        start = int(batch["spinup_days"])
        prec = batch["forcing"][..., FORCING_NAMES.index("prec")]
        self.scores.update(self, stage, "sm", pred, obs, pred.shape[0])
        if all(k in batch for k in BALANCE_INPUTS):
            dw = monotonic.surface_water_change(prec, batch["et_daily"],
                                                batch["q_surf_daily"], batch["swe_daily"])
            direction = monotonic.expected_direction(dw)[:, start:]
            bad, counted = monotonic.inconsistency(pred.detach(), direction)
            self.inconsistent[stage].update(bad, counted)
            self.log(f"{stage}_inconsistency", self.inconsistent[stage], on_epoch=True,
                     on_step=False, batch_size=pred.shape[0])

    def predict_step(self, batch, batch_idx):  # noqa: D102
        name = f"sm_layer{self.hparams.layer}"
        return {
            "cell_index": batch["cell_index"],
            "daily": {name: self.forecast_period(batch).detach()},
            "metadata": {name: ("m3 m-3", f"forecast volumetric soil moisture, layer "
                                f"{self.hparams.layer}", "Li et al. eqs 1–7")},
        }

    def report_lines(self, metrics: dict[str, float]) -> list[str]:
        """The end-of-fit summary (:class:`~h2mv_hybrid.callbacks.report.FitReport`)."""
        rows = [("pearson r", "val_sm_r", "{:.3f}"), ("RMSE (m³ m⁻³)", "val_sm_rmse", "{:.4f}"),
                ("inconsistency", "val_inconsistency", "{:.1%}"),
                ("RMSE term", "val_rmse_loss", "{:.4f}"), ("physics term", "val_phy_loss",
                                                           "{:.5f}"),
                ("total loss", "val_loss", "{:.4f}")]
        lines = [f"validation scores (daily soil moisture, layer {self.hparams.layer}, "
                 f"physics: {self.hparams.physics}):"]
        lines += [f"  {label:<16} {fmt.format(metrics[key]):>10}" for label, key, fmt in rows
                  if key in metrics]
        return lines
