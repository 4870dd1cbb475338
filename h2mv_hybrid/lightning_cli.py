"""``h2mv fit | validate | test | predict``: a thin LightningCLI.

Every model, data and trainer option comes from the YAML config and can be overridden on
the command line; ``--print_config`` prints the resolved configuration. The DataModule's
normalization statistics are linked into the model when both are instantiated.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.cli import LightningCLI

from h2mv_hybrid.data.datamodule import H2MVDataModule

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class H2MVCLI(LightningCLI):
    """LightningCLI with the data → model statistics link."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.link_arguments("data.stats", "model.init_args.stats", apply_on="instantiate")


def run(args: Sequence[str]) -> H2MVCLI:
    """Run one Lightning subcommand (``args[0]`` in fit, validate, test, predict)."""
    return H2MVCLI(
        L.LightningModule,
        H2MVDataModule,
        subclass_mode_model=True,
        args=list(args),
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
