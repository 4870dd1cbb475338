"""Say, at the end of a fit, where the outputs went and how well the model validates."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only


class FitReport(Callback):
    """Print the checkpoints, logs and store used, and the last validation scores."""

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:  # noqa: D102
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("val_")}
        if hasattr(pl_module, "report_lines"):  # each head knows its own scores
            lines = ["", *pl_module.report_lines(metrics)]
        else:
            lines = ["", "validation scores:", *(f"  {k:<24} {v:>10.4g}"
                                                 for k, v in sorted(metrics.items()))]
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        lines.append("")
        if ckpt is not None and ckpt.dirpath:
            lines.append(f"checkpoints: {ckpt.dirpath} (best: {ckpt.best_model_path or '-'})")
        if trainer.logger is not None and trainer.logger.log_dir:
            lines.append(f"logs:        {trainer.logger.log_dir}")
        datamodule = trainer.datamodule
        if datamodule is not None:
            lines.append(f"store:       {datamodule.store_path}")
        print("\n".join(lines))
