"""The ``h2mv`` command: one entry point whose first word names the job.

Two kinds of jobs, one parser each, both jsonargparse:

- ``fit``, ``validate``, ``test``, ``predict``: LightningCLI
  (:mod:`h2mv_hybrid.lightning_cli`);
- every other job is a plain function whose signature and docstring define its options
  (:func:`run_job`): every job takes ``--help``, and ``--config FILE`` (its options
  from a YAML file) unless the function has an option of that name. ``cv`` and
  ``compare`` train fits: their LightningCLI options (``--trainer.…``, ``--model.…``,
  ``--data.…``, ``--seed_everything``) go to every fit they start.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: job name → (module:function, one-line description); a dict of those: subcommands.
Job = tuple[str, str]
COMMANDS: dict[str, Job | dict[str, Job]] = {
    "cv": (
        "h2mv_hybrid.ensemble.cv:cross_validate",
        "train the K cross-validation members, then write the ensemble prediction store",
    ),
    "compare": (
        "h2mv_hybrid.ensemble.compare:compare",
        "train the variants of a comparison spec through the CV, print their score table",
    ),
    "identify": (
        "h2mv_hybrid.ensemble.identify:identify",
        "leave-one-constraint-out ensembles: which constraint pins down which process",
    ),
    "import": {
        "basins": ("h2mv_hybrid.importers.basins:import_basins",
                   "basin time series (CSV, Parquet, NetCDF) by a YAML mapping → a point store"),
        "camels": ("h2mv_hybrid.importers.camels:import_camels",
                   "catchments in the Caravan-CAMELS layout → a point store"),
        "netcdf": ("h2mv_hybrid.importers.netcdf:import_netcdf",
                   "gridded NetCDF products, by a YAML mapping → a grid store"),
    },
    "demo": (
        "h2mv_hybrid.demo:demo",
        "run the H2MV bucket on built-in forcing, print its water balance",
    ),
    "synth": (
        "h2mv_hybrid.data.synth:synth",
        "write a synthetic twin store (H2MV schema, with a truth group)",
    ),
    "analyze": (
        "h2mv_hybrid.analysis.report:analyze",
        "metric and equifinality tables, pattern maps and figures of an ensemble store",
    ),
    "gr4j": (
        "h2mv_hybrid.conceptual.calibrate:gr4j",
        "calibrate GR4J (with degree-day snow) per basin: the conceptual benchmark",
    ),
    "catchments": (
        "h2mv_hybrid.analysis.catchments:catchment_report",
        "per-basin NSE/KGE, water balance and emergent patterns of catchment (CAMELS) fits",
    ),
    "recovery": (
        "h2mv_hybrid.analysis.recovery:recovery",
        "compare a fitted model's SM_max and beta with a twin's truth",
    ),
    "sensitivity": (
        "h2mv_hybrid.analysis.sensitivity:main",
        "elasticities of runoff, ET and TWS to precipitation, energy and temperature (autodiff)",
    ),
}

#: Lightning subcommands, run by h2mv_hybrid.lightning_cli (LightningCLI).
LIGHTNING: dict[str, str] = {
    "fit": "train a model (h2mv fit --config experiments/quickstart.yaml)",
    "validate": "score a checkpoint on the validation cells",
    "test": "score a checkpoint on the test cells",
    "predict": "write every flux, state and coefficient of the predicted cells to zarr",
}

#: The options of a fit (LightningCLI's top-level keys), passed on by ``cv`` and ``compare``.
FIT_OPTIONS = ("--trainer", "--model", "--data", "--seed_everything", "--optimizer",
               "--lr_scheduler", "--ckpt_path")


def _usage() -> str:
    lines = ["usage: h2mv COMMAND [options]   (h2mv COMMAND --help for its options)", ""]
    lines.append("commands:")
    lines += [f"  {name:<14} {desc}" for name, desc in LIGHTNING.items()]
    for name, job in COMMANDS.items():
        if isinstance(job, dict):
            lines += [f"  {name + ' ' + sub:<14} {desc}" for sub, (_, desc) in job.items()]
        else:
            lines.append(f"  {name:<14} {job[1]}")
    return "\n".join(lines)


def _load(target: str) -> Callable[..., Any]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def split_fit_options(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(the job's own options, the fit options)`` of a command line.

    A fit option is a LightningCLI key (``--trainer.max_epochs=3``, ``--model.init_args.lr
    0.01``); a value given as the next word goes with it.
    """
    own: list[str] = []
    fit: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        key = word.split("=", 1)[0].split(".", 1)[0]
        if key in FIT_OPTIONS:
            fit.append(word)
            if "=" not in word and i + 1 < len(args) and not args[i + 1].startswith("--"):
                fit.append(args[i + 1])
                i += 1
        else:
            own.append(word)
        i += 1
    return own, fit


def _lists_as_json(func: Callable[..., Any], args: list[str]) -> list[str]:
    """``--members 0 1 2`` → ``--members=[0, 1, 2]`` for the list options of ``func``.

    Items of a list of strings are quoted, so that an id such as ``01022500`` stays a
    string (unquoted, YAML would read it as an octal number).
    """
    lists = {f"--{name}": "[str]" in str(p.annotation).replace("list", "").replace(
        "Sequence", "") for name, p in inspect.signature(func).parameters.items()
        if any(t in str(p.annotation) for t in ("list[", "Sequence["))}
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        values = []
        if word in lists:
            while i + 1 + len(values) < len(args) and not args[i + 1 + len(values)].startswith(
                    "--"):
                values.append(args[i + 1 + len(values)])
        if len(values) > 1 or (values and not values[0].lstrip().startswith("[")):
            items = [json.dumps(v) for v in values] if lists[word] else values
            out.append(f"{word}=[{', '.join(items)}]")
            i += 1 + len(values)
        else:
            out.append(word)
            i += 1
    return out


def run_job(func: Callable[..., Any], args: Sequence[str], prog: str) -> Any:
    """Parse ``args`` against ``func``'s signature (jsonargparse) and call it.

    A function with an ``overrides`` parameter trains fits: the fit options among
    ``args`` (:func:`split_fit_options`) become its ``overrides``.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    params = inspect.signature(func).parameters
    args = list(args)
    fit: list[str] = []
    if "overrides" in params:
        args, fit = split_fit_options(args)
    doc = (inspect.getdoc(func) or "").split("\n\n")[0]
    if "overrides" in params:
        doc += (" Its LightningCLI options (--trainer.…, --model.…, --data.…, "
                "--seed_everything) go to every fit it trains.")
    parser = ArgumentParser(prog=prog, description=doc, allow_abbrev=False)
    if "config" not in params:
        parser.add_argument("--config", action=ActionConfigFile,
                            help="the job's options from a YAML file")
    parser.add_function_arguments(func, as_positional=False,
                                  skip={"overrides"} if "overrides" in params else None)
    cfg = parser.parse_args(_lists_as_json(func, args))
    kwargs = parser.instantiate(cfg).as_dict()
    if "config" not in params:
        kwargs.pop("config", None)
    if "overrides" in params:
        kwargs["overrides"] = fit
    return func(**kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``h2mv COMMAND ...`` to the job's function."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = args[0], args[1:]
    try:
        if command in LIGHTNING:
            from h2mv_hybrid.lightning_cli import run

            run(args)
            return
        if command not in COMMANDS:
            valid = ", ".join([*LIGHTNING, *COMMANDS])
            sys.exit(f"h2mv: unknown command {command!r}; valid: {valid}\n\n{_usage()}")
        job, prog = COMMANDS[command], f"h2mv {command}"
        if isinstance(job, dict):
            if not rest or rest[0] not in job:
                found = repr(rest[0]) if rest else "nothing"
                sys.exit(f"h2mv {command}: expected one of {', '.join(job)}, found {found}")
            job, prog, rest = job[rest[0]], f"{prog} {rest[0]}", rest[1:]
        run_job(_load(job[0]), rest, prog)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # Input errors name the variable, the expected and the found: show just that.
        sys.exit(f"h2mv {command}: error: {err}")


def entry() -> None:
    """The ``h2mv`` console script: :func:`main`, with Ctrl-C ending in one line, status 130.

    :func:`main` itself lets KeyboardInterrupt through, so that a Python caller (a test
    runner) stops at once.
    """
    from h2mv_hybrid.signals import Stopped, install, uninstall

    previous = install()
    resume = ("the last checkpoint written is kept (resume a fit with --ckpt_path last, an "
              "h2mv cv by running it again)")
    try:
        main()
    except KeyboardInterrupt:
        print(f"h2mv: interrupted; {resume}", file=sys.stderr)
        sys.exit(130)
    except Stopped as stop:
        # 128 + the signal, as a shell reports a process ended by it
        print(f"h2mv: {stop}; {resume}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    finally:
        uninstall(previous)


if __name__ == "__main__":
    entry()
