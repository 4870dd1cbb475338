"""Atomic writes: build under a temporary name beside the target, then rename into place.

An interrupted run leaves the target as it was (absent, or the previous complete
version), never half written. :func:`write_text` and :func:`write_json` are the small
files of a CV root (``cv.json``, ``done.json``, member configs); :func:`read_json`
reads them back.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``.

    The file gets the usual mode (0666 less the umask), not mkstemp's 0600; on failure the
    temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _partial_prefix(path: Path) -> str:
    return f".{path.name}.{socket.gethostname()}-"


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary directories of ``path`` left by killed writers on this host.

    A writer that is killed outright (``kill -9``, out of memory) cannot remove its
    ``.<name>.<host>-<pid>.*.partial`` directory; the next write of the same target
    removes those whose process is gone. Returns what was removed.
    """
    path = Path(path)
    prefix = _partial_prefix(path)
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.partial"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``.

    An existing ``path`` is removed only once the new directory is complete (callers
    decide beforehand whether replacing it is allowed); on failure the temporary
    directory is removed. The temporary name carries the host and process id, so that
    the next write of ``path`` removes what a killed writer left (:func:`remove_stale_partials`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_partials(path):
        print(f"removed {stale}, left by an interrupted write of {path}")
    tmp = Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(path)}{os.getpid()}.",
                                suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file atomically (temporary file + rename): readers never see half a file."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(data, indent=2, default=str))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file written by :func:`write_json`."""
    with open(path) as f:
        return json.load(f)
