"""A callback that interrupts a fit, for the resume tests (imported by class path)."""

import os

from lightning.pytorch.callbacks import Callback


class InterruptAtEpochStart(Callback):
    """Press Ctrl+C (KeyboardInterrupt) as the epoch named in H2MV_TEST_INTERRUPT_EPOCH starts.

    At the start of epoch N the checkpoints of epoch N − 1 are on disk, as after a real
    interruption during epoch N.
    """

    def on_train_epoch_start(self, trainer, pl_module):
        if os.environ.get("H2MV_TEST_INTERRUPT_EPOCH") == str(trainer.current_epoch):
            raise KeyboardInterrupt


class PoisonValidation(Callback):
    """Every validation batch's forcing becomes NaN: all validation losses are non-finite."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0):
        batch["forcing"].fill_(float("nan"))
