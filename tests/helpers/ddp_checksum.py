"""A callback for the DDP test: each rank writes a checksum of its weights after fitting."""

import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class WeightChecksum(Callback):
    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten().double() for p in pl_module.parameters()])
        line = f"{trainer.global_rank} {trainer.world_size} {trainer.global_step} " \
               f"{float(flat.sum()):.17g} {float((flat * flat).sum()):.17g}\n"
        Path(self.out_dir, f"rank{trainer.global_rank}.txt").write_text(line)
        os.environ.setdefault("H2MV_DDP_TEST", "1")
