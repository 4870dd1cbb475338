"""The ``h2mv`` command: one entry point whose first word names the job.

Each job is a plain function whose signature and docstring define its options, parsed by
jsonargparse, so every job takes ``--config FILE``, ``--print_config`` and ``--help``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

#: job name → (module:function, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
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
    "catchments": (
        "h2mv_hybrid.analysis.catchments:catchment_report",
        "per-basin NSE/KGE, water balance and emergent patterns of catchment (CAMELS) fits",
    ),
    "recovery": (
        "h2mv_hybrid.model.recovery:recovery",
        "compare a fitted model's SM_max and beta with a twin's truth",
    ),
}


#: Lightning subcommands, run by h2mv_hybrid.lightning_cli (LightningCLI).
LIGHTNING: dict[str, str] = {
    "fit": "train a model (h2mv fit --config experiments/quickstart.yaml)",
    "validate": "score a checkpoint on the validation cells",
    "test": "score a checkpoint on the test cells",
    "predict": "write every flux, state and coefficient of the predicted cells to zarr",
}

#: Commands with their own argument parsing (job options plus pass-through fit arguments).
SPECIAL: dict[str, tuple[str, str]] = {
    "cv": (
        "h2mv_hybrid.ensemble.cv:cv",
        "train the K cross-validation members, then write the ensemble prediction store",
    ),
    "compare": (
        "h2mv_hybrid.ensemble.compare:compare_command",
        "train the variants of a comparison spec through the CV, print their score table",
    ),
    "import": (
        "h2mv_hybrid.importers.command:import_command",
        "write a store from real data: camels (catchments) or netcdf (gridded products)",
    ),
}


def _usage() -> str:
    lines = ["usage: h2mv COMMAND [options]   (h2mv COMMAND --help for its options)", ""]
    lines.append("commands:")
    lines += [f"  {name:<10} {desc}" for name, desc in LIGHTNING.items()]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in {**SPECIAL, **COMMANDS}.items()]
    return "\n".join(lines)


def _load(target: str) -> Callable[..., object]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``h2mv COMMAND ...`` to the job's function."""
    from jsonargparse import auto_cli

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = args[0], args[1:]
    if command in LIGHTNING:
        from h2mv_hybrid.lightning_cli import run

        try:
            run(args)
        except (ValueError, FileExistsError, FileNotFoundError) as err:
            sys.exit(f"h2mv {command}: error: {err}")
        return
    if command in SPECIAL:
        try:
            _load(SPECIAL[command][0])(rest)
        except (ValueError, FileExistsError, FileNotFoundError) as err:
            sys.exit(f"h2mv {command}: error: {err}")
        return
    if command not in COMMANDS:
        valid = ", ".join([*LIGHTNING, *SPECIAL, *COMMANDS])
        sys.exit(f"h2mv: unknown command {command!r}; valid: {valid}\n\n{_usage()}")
    func = _load(COMMANDS[command][0])
    try:
        auto_cli(func, args=rest, as_positional=False)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # Input errors name the variable, the expected and the found: show just that.
        sys.exit(f"h2mv {command}: error: {err}")


if __name__ == "__main__":
    main()
