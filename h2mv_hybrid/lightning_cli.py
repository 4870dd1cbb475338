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
import logging
import signal
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
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


#: Subcommands that score or apply a trained model: they need a checkpoint.
NEEDS_CHECKPOINT = ("validate", "test", "predict")


def find_checkpoint(which: str, root: str | Path) -> Path:
    """``last``: the newest ``last.ckpt`` under ``root``; ``best``: that fit's best checkpoint.

    The best one is read from the ModelCheckpoint state saved in the last checkpoint, so a
    second fit in the same root never leaves ``best`` pointing at the first fit's.
    """
    import torch

    root = Path(root)
    lasts = sorted(root.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise FileNotFoundError(f"--ckpt_path {which}: expected a last.ckpt under {root} "
                                f"(trainer.default_root_dir), found none: fit first, or give "
                                f"a checkpoint's path")
    last = lasts[-1]
    if which == "last":
        return last
    state = torch.load(last, map_location="cpu", weights_only=False).get("callbacks", {})
    best = [v["best_model_path"] for k, v in state.items()
            if k.startswith("ModelCheckpoint") and v.get("best_model_path")]
    if not best or not Path(best[0]).exists():
        raise FileNotFoundError(f"--ckpt_path best: expected the best checkpoint recorded in "
                                f"{last}, found {best[0] if best else 'none recorded'}")
    return Path(best[0])


#: Model options that say how a trained model is run, not what was trained: a command
#: may set them differently from its checkpoint (a longer spin-up for the test; chunks of
#: time and the recurrence's backend, which change memory and speed, not the model: a
#: checkpoint from before ``time_chunk: auto`` became the default runs with it).
RUNTIME_OPTIONS = ("spinup_cycles", "spinup_tolerance", "spinup_max_cycles",
                   "network.time_chunk", "network.chunk_mode", "network.feedback_backend",
                   "network.lstm_backend")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = "" if k == "init_args" else str(k)  # model.init_args.lr reads as lr
            out.update(_flatten(v, f"{prefix}.{key}".strip(".") if key else prefix))
        return out
    return {prefix: value}


def set_option(init_args: Any, key: str, value: Any) -> None:
    """Set a flattened option (``network.time_chunk``) in parsed init args.

    Their groups may be namespaces or plain dicts.
    """
    *path, name = key.split(".")
    target = init_args
    for part in path:
        target = target[part] if isinstance(target, dict) else getattr(target, part)
    if isinstance(target, dict):
        target[name] = value
    else:
        setattr(target, name, value)


def option_conflicts(given: Any, found: Any) -> list[tuple[str, Any, Any]]:
    """``(option, given, checkpoint's)`` for every model option a checkpoint changed.

    ``given`` is the model group as parsed from the config and command line, ``found`` the
    same group once Lightning has applied the checkpoint's hyperparameters. Options left
    unset (None) are not conflicts: the training statistics, for one, come from the
    checkpoint by design.
    """
    if not isinstance(given, dict) or not isinstance(found, dict):
        return []
    before, after = _flatten(given), _flatten(found)
    return [(k, before[k], after.get(k)) for k in before
            if before[k] is not None and k in after and after[k] != before[k]]


class H2MVCLI(LightningCLI):
    """LightningCLI with the model ↔ data links and checkpoints checked before any data."""

    #: the command line of this run (``run`` sets it), to tell what the user gave there
    _h2mv_args: list[str] = []

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.link_arguments("model", "data.model_constraints", compute_fn=model_constraints,
                              apply_on="parse")
        parser.link_arguments("data.stats", "model.init_args.stats", apply_on="instantiate")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        from h2mv_hybrid.callbacks.stop import GracefulStop

        if self.subcommand in NEEDS_CHECKPOINT and not self._logger_given():
            # Scoring or predicting writes no training curves: without this, every test or
            # predict would add an empty logs/version_N beside the fit's (issue 24).
            config["logger"] = False
        return super()._instantiate_trainer(config, [*callbacks, GracefulStop()])

    def _logger_given(self) -> bool:
        """Whether the command line itself names a logger (a config's is the fit's)."""
        return any(a.split("=", 1)[0] == "--trainer.logger" for a in self._h2mv_args)

    def _parse_ckpt_path(self) -> None:
        """Resolve and check ``--ckpt_path``, then let Lightning read its hyperparameters.

        ``best`` and ``last`` name the latest fit's checkpoints under
        ``trainer.default_root_dir`` (:func:`find_checkpoint`); validate, test and predict
        without a checkpoint are refused here, before anything is built or read.
        """
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._check_checkpoint(subcommand)
            given = self.config[subcommand].get("model")
            given = given.as_dict() if hasattr(given, "as_dict") else given
        super()._parse_ckpt_path()
        if subcommand:
            self._check_checkpoint_options(subcommand, given)
            self._check_model_options(subcommand)

    def _check_checkpoint_options(self, subcommand: str, given: Any) -> None:
        # Lightning replaces the model options by the checkpoint's: a differing option on
        # the command line or in the config would be dropped without a word.
        model = self.config[subcommand].get("model")
        found = model.as_dict() if hasattr(model, "as_dict") else model
        conflicts = option_conflicts(given, found)
        for key, value, _ in [c for c in conflicts if c[0] in RUNTIME_OPTIONS]:
            # how a trained model is run, not what it is: this command's value holds
            set_option(model.init_args, key, value)
        conflicts = [c for c in conflicts if c[0] not in RUNTIME_OPTIONS]
        if conflicts:
            ckpt = self.config[subcommand].get("ckpt_path")
            raise ValueError(
                f"--ckpt_path {ckpt}: the checkpoint's model options differ from this "
                f"command's, and the checkpoint's would be used: "
                + "; ".join(f"{k}: checkpoint {c!r}, given {g!r}" for k, g, c in conflicts)
                + ". Give the checkpoint's values (or leave them out), or fit a new model")

    def _check_model_options(self, subcommand: str) -> None:
        # A model class may check its options by name before anything is built or read.
        model = self.config[subcommand].get("model")
        check = getattr(_class(getattr(model, "class_path", None)), "check_options", None)
        init_args = getattr(model, "init_args", None)
        if check is not None and init_args is not None:
            check(init_args.as_dict())

    def _check_checkpoint(self, subcommand: str) -> None:
        cfg = self.config[subcommand]
        given = cfg.get("ckpt_path")
        root = cfg.trainer.get("default_root_dir") or "."
        if given in ("best", "last"):
            cfg.ckpt_path = str(find_checkpoint(given, root))
        elif given is not None and not Path(given).is_file():
            raise FileNotFoundError(f"--ckpt_path: expected a checkpoint file, found nothing "
                                    f"at {given}")
        elif given is None and subcommand in NEEDS_CHECKPOINT:
            raise ValueError(f"--ckpt_path: h2mv {subcommand} needs a trained model: "
                             f"expected a checkpoint's path, or best / last (the latest fit's "
                             f"under {root}), found none")


class _NoAdvert(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger, printed on every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvert())

#: Warnings of Lightning itself that say nothing to a user of h2mv, filtered by message
#: (never a blanket filter): ours passes ``args`` while keeping ``sys.argv`` on purpose
#: (Lightning's DDP launcher restarts the command line for the other ranks),
#: Lightning's own use of a torch API that torch deprecated, and the batch indices that
#: prediction writers may ask for: ours places every cell by the batch's ``cell_index``,
#: and our loaders have no batch sampler to take indices from.
LIGHTNING_NOISE = (
    "LightningCLI's args parameter is intended to run from within Python",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    "Couldn't infer the batch indices fetched from your dataloader",
)


#: Top-level keys of a fit's configuration (LightningCLI's and jsonargparse's own).
TOP_KEYS = ("help", "config", "print_config", "seed_everything", "trainer", "model", "data",
            "optimizer", "lr_scheduler", "ckpt_path", "weights_only")


def _parameters(cls: Any) -> list[str]:
    import inspect

    return [n for n in inspect.signature(cls.__init__).parameters if n != "self"]


def _class(path: str | None) -> Any:
    if not path or "." not in path:
        return None
    module, name = path.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None  # jsonargparse says what is wrong with the class path itself


def unknown_keys(args: Sequence[str]) -> list[str]:
    """Every option of a fit's command line and config files that no class accepts.

    One line each: the key, where it was given, and the closest valid keys ("did you
    mean"). Checked by name only, in seconds, before LightningCLI parses anything:
    values, types and nested callback options are left to it.
    """
    import difflib

    import yaml

    given: list[tuple[str, str]] = []  # (dotted key, where)
    model_class = None
    rest = list(args[1:])
    for i, word in enumerate(rest):
        if not word.startswith("--"):
            continue
        key = word[2:].split("=", 1)[0].removesuffix("+")
        if key == "config" and i + 1 < len(rest):
            try:
                cfg = yaml.safe_load(Path(rest[i + 1]).read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue  # missing or broken file: LightningCLI's message names it
            for top, value in cfg.items():
                given.append((top, f"in {rest[i + 1]}"))
                if isinstance(value, dict):
                    if top == "model":
                        model_class = value.get("class_path", model_class)
                        value = {**value, **(value.get("init_args") or {})}
                    given += [(f"{top}.{k}", f"in {rest[i + 1]}") for k in value]
                    net = value.get("network") if top == "model" else None
                    if isinstance(net, dict):
                        given += [(f"model.network.{k}", f"in {rest[i + 1]}") for k in net]
        else:
            parts = key.replace(".init_args.", ".").split(".")
            given.append((".".join(parts[:2]), "on the command line"))
            if parts[:2] == ["model", "network"] and len(parts) > 2:
                given.append((".".join(parts[:3]), "on the command line"))
            if key == "model.class_path" and i + 1 < len(rest):
                model_class = rest[i + 1]
    cls = _class(model_class)
    valid = {"": TOP_KEYS, "trainer": _parameters(L.Trainer),
             "data": _parameters(H2MVDataModule)}
    if cls is not None:
        valid["model"] = ["class_path", "init_args", "dict_kwargs", *_parameters(cls)]
        from h2mv_hybrid.model.module import H2MVHybrid

        if isinstance(cls, type) and issubclass(cls, H2MVHybrid):
            from dataclasses import fields

            from h2mv_hybrid.model.networks import HybridSettings

            valid["model.network"] = [f.name for f in fields(HybridSettings)]
    errors = []
    for key, where in dict.fromkeys(given):
        group, _, name = key.rpartition(".")
        names = valid.get(group)
        if names is None or name in names:
            continue
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(f'{group}.{c}' for c in close)}?" if close else ""
        errors.append(f"unknown option {key} ({where}){hint}")
    return errors


def run(args: Sequence[str]) -> H2MVCLI:
    """Run one Lightning subcommand (``args[0]`` in fit, validate, test, predict).

    Unknown option names are refused first, in one line each with the closest valid ones.
    """
    errors = unknown_keys(args)
    if errors:
        raise ValueError("\n  ".join([*errors, f"(h2mv {args[0]} --help lists every option)"]))
    previous = signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings():
        for message in LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=message)
        if args[0] != "fit":  # a fit's checkpoint folder, irrelevant when only scoring
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        try:
            H2MVCLI._h2mv_args = list(args)
            return H2MVCLI(
                L.LightningModule,
                H2MVDataModule,
                subclass_mode_model=True,
                args=list(args),
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
            )
        except SystemExit as stop:
            # On Ctrl-C Lightning saves what it can, then exits with status 1 (ignoring
            # further Ctrl-C meanwhile): a caller (h2mv cv, a test runner) would see a
            # failure instead of an interrupt. Hand the interrupt back, and Ctrl-C with it.
            if not isinstance(stop.__context__, KeyboardInterrupt):
                raise
            raise KeyboardInterrupt from stop
        finally:
            # Lightning ignores Ctrl-C while it shuts down after one; whatever ended the
            # run, the caller gets Ctrl-C back as it was (a Python session, a test runner).
            if (signal.getsignal(signal.SIGINT) is signal.SIG_IGN
                    and previous is not signal.SIG_IGN):
                signal.signal(signal.SIGINT, previous)
