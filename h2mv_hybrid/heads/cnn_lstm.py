"""CNN-LSTM estimating root-zone soil moisture from surface soil moisture, with a Richards loss.

After Zhang et al. (2025, J. Hydrol., doi:10.1016/j.jhydrol.2025.133086; shared/papers/
pgdl-cnn-lstm-richards-zhang-2025-summary.txt): every day, a small CNN reads the k × k
neighbourhood of the target cell (surface soil moisture, meteorology, the static terrain
and soil features, and which neighbours are land); an LSTM reads the CNN's daily features
with the cell's own inputs and estimates the volumetric soil moisture of the deeper
layers (the twin's 7–28 and 28–100 cm) from the surface layer (0–7 cm) the store
provides, as a satellite product would.

Two physical constraints make the PGDL-CNN-LSTM, each switchable:

- ``bounded``: the output activation θ = θ_r + (θ_s − θ_r) · sigmoid(z) keeps every
  estimate between the residual and saturated water content of the cell's soil, from
  its sand and clay through the pedotransfer function ``pedotransfer``;
- ``physics: richards``: the loss adds w_phy · mean log(1 + |R| / ``tolerance``), R the
  residual (mm day⁻¹) of the 1-D Richards equation, mixed form, by finite differences
  between the layers and days (:func:`process_layers.richards.richards_residual`), over
  the profile [observed surface layer, estimated layers], the closure's parameters from
  the same pedotransfer, root uptake ET · root fraction as the sink (``sink: et``).

The physical inconsistency (Zhang et al.) is the share of residuals above ``tolerance``.
The LSTM runs sequence-to-sequence like the multi-task LSTM: every scored day has at
least ``warmup_days`` of history; training draws one window per batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.heads.base import (
    SCORED,
    LearningRate,
    OutputScores,
    SequenceTask,
    check_window,
    scaled_rmse,
)
from h2mv_hybrid.heads.daily_inputs import DailyInputs, column_stats, require_inputs
from h2mv_hybrid.model.lstm_scan import sequence_lstm
from h2mv_hybrid.model.metrics import Share
from h2mv_hybrid.options import check_choice
from process_layers import richards
from process_layers.soil_layers import ROOT_FRACTIONS

Physics = Literal["none", "richards"]
Sink = Literal["et", "none"]
#: Meteorology of the CNN-LSTM (schema names): rain, temperature, radiation, humidity, wind.
CNN_FORCINGS: tuple[str, ...] = ("prec", "tair", "sw_down", "lw_down", "q_air", "wind")


class PatchCNNLSTM(SequenceTask):
    """CNN over k × k patches, LSTM over days, soil moisture of the deeper layers.

    Args:
        stats: normalization statistics of the DataModule (linked by the CLI). The
            DataModule must serve ``sm_layers`` and the non-core ``forcings`` as
            ``inputs``, ``patch`` k > 1 with ``patch_inputs`` = ``sm_layers``, the
            ``forcings`` and ``static``, and ``et_daily`` for ``sink: et``.
        layers: the estimated layers of ``sm_layers`` (below ``surface_layer``).
        surface_layer: the layer given as input (the surface product).
        physics: ``none`` or ``richards`` (the Richards-equation residual in the loss).
        bounded: bound the output between θ_r and θ_s of the pedotransfer.
        w_phy: weight of the Richards term.
        tolerance: residual (mm day⁻¹) above which a day and layer count as physically
            inconsistent; also the scale of the Richards term.
        pedotransfer: ``cosby_1984`` (Brooks–Corey) or ``carsel_parrish_1988``
            (van Genuchten), from the static features ``sand`` and ``clay``.
        bottom: lower boundary of the profile: ``free_drainage`` or ``zero_flux``.
        sink: ``et`` (root uptake ET · root fraction of each layer) or ``none``.
        forcings: daily meteorological inputs (schema names).
        conv_channels: channels of the CNN.
        hidden: LSTM units.
        dropout: dropout on the LSTM output.
        warmup_days: forcing days read by the CNN and LSTM before the first scored day.
        train_days: days scored per training window of each batch.
        lr: Adam learning rate, or a schedule {first epoch: rate}
            (:func:`~h2mv_hybrid.heads.base.learning_rates`).
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        stats: Normalization | None = None,
        layers: list[int] | None = None,
        surface_layer: int = 1,
        physics: Physics = "richards",
        bounded: bool = True,
        w_phy: float = 0.1,
        tolerance: float = 1.0,
        pedotransfer: richards.Pedotransfer = "cosby_1984",
        bottom: richards.Bottom = "zero_flux",
        sink: Sink = "et",
        forcings: list[str] | None = None,
        conv_channels: int = 16,
        hidden: int = 64,
        dropout: float = 0.1,
        warmup_days: int = 90,
        train_days: int = 180,
        lr: LearningRate = 3e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        layers = list(layers or [2, 3])
        check_choice("physics", physics, Physics)
        check_choice("sink", sink, Sink)
        richards.check_pedotransfer(pedotransfer, "pedotransfer")
        check_choice("bottom", bottom, richards.Bottom)
        if tolerance <= 0 or w_phy < 0:
            raise ValueError(f"tolerance, w_phy: expected > 0 and ≥ 0, found {tolerance}, "
                             f"{w_phy}")
        check_window(warmup_days, train_days)
        self.forcings = tuple(forcings or CNN_FORCINGS)
        needed = ["sm_layers", *self.forcings, *(["et_daily"] if sink == "et" else [])]
        stats = require_inputs(stats, needed)
        n_layers = len(stats.layer_thickness_mm)
        if not 1 <= surface_layer <= n_layers or any(
                not surface_layer < k <= n_layers for k in layers) or len(set(layers)) != len(
                layers):
            raise ValueError(f"layers: expected distinct layers in {surface_layer + 1} … "
                             f"{n_layers} (below surface_layer {surface_layer}), found {layers}")
        below = list(range(surface_layer + 1, n_layers + 1))
        if physics == "richards" and sorted(layers) != below:
            raise ValueError(f"layers: the Richards residual needs the whole profile below "
                             f"the surface layer, expected {below}, found {layers}")
        missing = [f for f in ("sand", "clay") if f not in stats.features]
        if missing and (bounded or physics == "richards"):
            raise ValueError(f"static features: expected sand and clay for the pedotransfer "
                             f"function, found {stats.features}")
        self.save_hyperparameters()
        self.layers = tuple(sorted(layers))
        self.channels = ("sm_layers", *self.forcings)
        self.features = list(stats.features)
        self.configure(stats)

    def configure_models(self, stats: Normalization) -> None:  # noqa: D102
        hp = self.hparams
        self.inputs = DailyInputs(stats, self.forcings)
        m, s = column_stats(stats, "sm_layers", hp.surface_layer)
        pairs = [column_stats(stats, name) for name in self.forcings]
        self.register_buffer("c_mean", torch.tensor([m, *(p[0] for p in pairs)]))
        self.register_buffer("c_std", torch.tensor([s, *(p[1] for p in pairs)]))
        self.register_buffer("s_mean", torch.tensor(stats.static_mean))
        self.register_buffer("s_std", torch.tensor(stats.static_std))
        self.register_buffer("thickness", torch.tensor(stats.layer_thickness_mm))
        pairs = [column_stats(stats, "sm_layers", k) for k in self.layers]
        self.register_buffer("y_mean", torch.tensor([p[0] for p in pairs]))
        self.register_buffer("y_std", torch.tensor([p[1] for p in pairs]))
        n_static = len(stats.static_mean)
        in_ch = len(self.channels) + n_static + 1  # + the land mask
        ch = hp.conv_channels
        self.cnn = nn.Sequential(nn.Conv2d(in_ch, ch, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(ch, ch, 3, padding=1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.lstm = nn.LSTM(ch + self.inputs.size + 1, hp.hidden, batch_first=True)
        self.drop = nn.Dropout(hp.dropout)
        self.head = nn.Linear(hp.hidden, len(self.layers))

    def configure_metrics(self) -> None:  # noqa: D102
        self.scores = OutputScores([f"sm_layer{k}" for k in self.layers])
        self.inconsistent = nn.ModuleDict({s: Share() for s in SCORED})

    # -- soil hydraulics ---------------------------------------------------------------
    def soil(self, batch: dict[str, Tensor]) -> richards.SoilHydraulics:
        """Pedotransfer parameters of the batch's cells (from sand and clay fractions)."""
        static = batch["static"].double()
        sand = static[:, self.features.index("sand")]
        clay = static[:, self.features.index("clay")]
        return richards.pedotransfer(self.hparams.pedotransfer, sand, clay)

    # -- the network -------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], first: int = 0, last: int | None = None
                ) -> Tensor:
        """Soil moisture (m³ m⁻³) of :attr:`layers` over days [first, last) [cells, days, L]."""
        surface = self.hparams.surface_layer - 1
        cols = [batch["sm_layers_patch"][:, first:last, surface]]
        cols += [batch[f"{n}_patch"][:, first:last] if f"{n}_patch" in batch else None
                 for n in self.forcings]
        if any(c is None for c in cols):
            absent = [n for n, c in zip(self.channels, cols, strict=True) if c is None]
            raise ValueError(f"data.patch_inputs: expected {', '.join(self.channels)} and "
                             f"static, missing {', '.join(absent)}")
        x = (torch.stack(cols, 2) - self.c_mean[:, None, None]) / self.c_std[:, None, None]
        n, days, _, k, _ = x.shape
        st = (batch["static_patch"] - self.s_mean[:, None, None]) / self.s_std[:, None, None]
        valid = batch["patch_valid"][:, None]
        img = torch.cat([x, st[:, None].expand(-1, days, -1, -1, -1),
                         valid[:, None].expand(-1, days, -1, -1, -1)], 2)
        img = torch.nan_to_num(img) * batch["patch_valid"][:, None, None]  # no data: 0
        conv = self.cnn(img.reshape(n * days, -1, k, k)).reshape(n, days, -1)
        own = self.inputs(batch)[:, first:last]
        surf = (batch["sm_layers"][:, first:last, surface] - self.c_mean[0]) / self.c_std[0]
        h = sequence_lstm(self.lstm, torch.cat([conv, own, surf[..., None]], -1))
        z = self.head(self.drop(h))
        if not self.hparams.bounded:
            return self.y_mean + self.y_std * z
        soil = self.soil(batch)
        lo, hi = soil.theta_r.to(z)[:, None, None], soil.theta_s.to(z)[:, None, None]
        return lo + (hi - lo) * torch.sigmoid(z)

    def profile(self, batch: dict[str, Tensor], pred: Tensor, first: int,
                last: int | None) -> Tensor:
        """[surface layer observed, estimated layers] [cells, days, layers]."""
        surface = batch["sm_layers"][:, first:last, : self.hparams.surface_layer]
        return torch.cat([surface, pred], -1)

    def residual(self, batch: dict[str, Tensor], theta: Tensor, first: int,
                 last: int | None) -> Tensor:
        """Richards residuals of the layers below the surface, mm day⁻¹ [cells, days − 1, L]."""
        sink = None
        if self.hparams.sink == "et":
            roots = torch.tensor(ROOT_FRACTIONS, dtype=theta.dtype, device=theta.device)
            et = batch["et_daily"][:, first:last]
            sink = et[..., None] * roots[: theta.shape[-1]]
        params = self.soil(batch).to(theta)
        return richards.richards_residual(theta, self.thickness.to(theta), params,
                                          bottom=self.hparams.bottom, sink=sink)

    # -- steps -------------------------------------------------------------------------
    def shared_step(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> Tensor:  # noqa: D102
        first, last, scored = self.window(batch, stage)
        pred = self(batch, first, last)
        obs = batch["sm_layers"][:, first:last][..., [k - 1 for k in self.layers]]
        p, y = pred[:, -scored:], obs[:, -scored:]
        rmse = scaled_rmse(p, y, self.y_std, dim=(0, 1)).sum()
        n = pred.shape[0]
        loss = rmse
        res = phy = None
        if self.hparams.physics == "richards" or stage != "train":
            res = self.residual(batch, self.profile(batch, pred, first, last), first,
                                last)[:, -(scored - 1):]
        if self.hparams.physics == "richards":
            # log(1 + |R|/tol): linear near zero, but a dry layer under a wet one (residuals
            # of 1e7 mm/day through the suction curve) cannot swamp the data term
            phy = torch.log1p(res.abs() / self.hparams.tolerance).nan_to_num().mean()
            loss = loss + self.hparams.w_phy * phy
        parts = {"rmse_loss": rmse} if phy is None else {"phy_loss": phy, "rmse_loss": rmse}
        self.log_losses(stage, loss, parts, n)
        if stage != "train":
            for i, k in enumerate(self.layers):
                self.scores.update(self, stage, f"sm_layer{k}", p[..., i], y[..., i], n)
            finite = torch.isfinite(res)
            self.inconsistent[stage].update((res.abs() > self.hparams.tolerance) & finite,
                                            finite)
            self.log(f"{stage}_inconsistency", self.inconsistent[stage], on_epoch=True,
                     on_step=False, batch_size=n)
        return loss

    def predict_step(self, batch, batch_idx):  # noqa: D102
        first, last, scored = self.window(batch, "predict")
        pred = self(batch, first, last)[:, -scored:].detach()
        daily = {f"sm_layer{k}": pred[..., i] for i, k in enumerate(self.layers)}
        meta = {name: ("m3 m-3", f"estimated volumetric soil moisture, layer {name[-1]}",
                       "Zhang et al. 2025 (CNN-LSTM)") for name in daily}
        return {"cell_index": batch["cell_index"], "daily": daily, "metadata": meta}

    def report_lines(self, metrics: dict[str, float]) -> list[str]:
        """The end-of-fit summary (:class:`~h2mv_hybrid.callbacks.report.FitReport`)."""
        lines = [f"validation scores (CNN-LSTM, physics: {self.hparams.physics}, bounded: "
                 f"{self.hparams.bounded}):", f"  {'layer':<12} {'r':>8} {'RMSE':>10}"]
        for k in self.layers:
            r, e = metrics.get(f"val_sm_layer{k}_r"), metrics.get(f"val_sm_layer{k}_rmse")
            if r is not None and e is not None:
                lines.append(f"  sm_layer{k:<4} {r:>8.3f} {e:>10.4f}")
        if "val_inconsistency" in metrics:
            lines.append(f"  Richards residual > {self.hparams.tolerance:g} mm/day: "
                         f"{metrics['val_inconsistency']:.1%}")
        return lines
