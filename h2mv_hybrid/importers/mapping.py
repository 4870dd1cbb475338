"""What every importer's YAML mapping goes through before it is read."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def read_mapping(mapping: str | os.PathLike, out: str | os.PathLike, overwrite: bool
                 ) -> tuple[Path, dict]:
    """An importer's YAML mapping, after checking that it exists and ``out`` may be written."""
    path = Path(mapping)
    if not path.is_file():
        raise FileNotFoundError(f"mapping: expected a YAML file at {path}, found nothing")
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"out: {out} exists; pass --overwrite true to replace it")
    return path, yaml.safe_load(path.read_text()) or {}
