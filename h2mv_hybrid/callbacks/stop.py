"""Stopping a Lightning run on SIGTERM, every rank after the same batch.

:class:`GracefulStop` is on every Lightning command and replaces Lightning's own SIGTERM
handler while a trainer runs. Lightning's handler broadcasts a tensor from inside the
signal handler; under DDP that collective can meet another one of the interrupted main
thread, and both ranks hang (issue 22: 19 minutes in a futex). Here the handler only
records the signal; after every batch all ranks agree (one ``max`` all-reduce) and all
raise :class:`h2mv_hybrid.signals.Stopped` after the same batch.

The epoch in progress is abandoned, not checkpointed: ``last.ckpt`` stays the end of the
previous epoch, so a resumed fit repeats the abandoned epoch and stays bit-identical to an
uninterrupted one (a mid-epoch checkpoint would restart the epoch's batches differently).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch
from lightning.pytorch.callbacks import Callback

from h2mv_hybrid.signals import Stopped


class GracefulStop(Callback):
    """Stop every rank after the same batch once any rank received SIGTERM."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def _install(self, trainer) -> None:
        # Lightning registers its handler when the run starts, after the setup hooks and
        # before these; its teardown puts back the handler that was there before the run.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._record)

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._install(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._install(trainer)

    def on_test_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._install(trainer)

    def on_predict_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._install(trainer)

    def _check(self, trainer, stage: str) -> None:
        flag = torch.tensor([float(self.received or 0)], device=trainer.strategy.root_device)
        if trainer.world_size > 1:  # every rank calls this after every batch: no deadlock
            flag = trainer.strategy.reduce(flag, reduce_op="max")
        signum = int(flag.item())
        if signum:
            where = f"during {stage}, epoch {trainer.current_epoch}"
            raise Stopped(signum, where)

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: D102
        self._check(trainer, "training")

    def on_validation_batch_end(self, trainer, *args) -> None:  # noqa: D102
        self._check(trainer, "validation")

    def on_test_batch_end(self, trainer, *args) -> None:  # noqa: D102
        self._check(trainer, "test")

    def on_predict_batch_end(self, trainer, *args) -> None:  # noqa: D102
        self._check(trainer, "prediction")
