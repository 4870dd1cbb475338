"""The ``h2mv import`` command: one subcommand per importer."""

from __future__ import annotations

from collections.abc import Sequence


def import_command(args: Sequence[str]) -> None:
    """``h2mv import camels …`` or ``h2mv import netcdf …`` (each with ``--help``)."""
    from jsonargparse import auto_cli

    from h2mv_hybrid.importers.camels import import_camels
    from h2mv_hybrid.importers.netcdf import import_netcdf

    auto_cli({"camels": import_camels, "netcdf": import_netcdf}, args=list(args),
             as_positional=False)
