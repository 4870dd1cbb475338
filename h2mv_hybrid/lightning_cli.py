"""``h2mv fit | validate | test | predict``: a thin LightningCLI.

Every model, data and trainer option comes from the YAML config and can be overridden on
the command line; ``--print_config`` prints the resolved configuration. Two links join
the model and the data:

- ``model.init_args.constraints`` → ``data.model_constraints`` (when the config is parsed): a
  constraint is declared once, on the model, and the DataModule serves its targets and
  computes their statistics as the constraint compares them;
- ``data.stats`` → ``model.init_args.stats`` (when both are instantiated): the training
  statistics, kept in the model's checkpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

from h2mv_hybrid.constraints import Constraint
from h2mv_hybrid.data.datamodule import H2MVDataModule

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def model_constraints(model: Any) -> list[dict[str, Any]] | None:
    """The constraints of a parsed ``model`` group, as the model will use them, or None.

    A model class that declares constraints has a ``declared_constraints`` class method
    that resolves its ``constraints`` argument (None: its default); other models (the
    alternate heads) have none, and the DataModule falls back to its own defaults.
    """
    class_path = getattr(model, "class_path", None)
    if not class_path:
        return None
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    resolve = getattr(cls, "declared_constraints", None)
    if resolve is None:
        return None
    given = getattr(model.init_args, "constraints", None)
    parsed = None if given is None else [
        Constraint(**vars(getattr(c, "init_args", c))) for c in given]
    return [asdict(c) for c in resolve(parsed)]


class H2MVCLI(LightningCLI):
    """LightningCLI with the model ↔ data links."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.link_arguments("model", "data.model_constraints", compute_fn=model_constraints,
                              apply_on="parse")
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
