"""Claims: which process trains a CV member, or writes the ensemble store, right now.

Several processes may share one ``h2mv cv`` root (devices, job-array tasks). Each member
is trained by the process that holds its claim, ``member_<k>/claim.json``; the others skip
it. A claim is created with ``O_CREAT | O_EXCL``, which is atomic on local and NFSv3+
file systems, and records the host, the process id, the job (``SLURM_JOB_ID`` or
``TORCHELASTIC_RUN_ID``) and the time.

A claim is stale, and is taken over, when its process is gone:

- on the same host, when no process has its id;
- from another host, when neither the claim nor the member's newest checkpoint has
  changed for ``stale_after_s`` (default 6 hours; each epoch writes ``last.ckpt``). Delete
  the claim file by hand to take a member over sooner.

The other ranks of a distributed fit do not claim: they train the member whose claim
their rank 0 holds (the process that started them, or the same job), and skip the others.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from h2mv_hybrid.atomic import pid_alive

CLAIM = "claim.json"
STALE_AFTER_S = 6 * 3600.0
#: How long another rank waits for its rank 0 to claim (or skip) a member.
RANK_WAIT_S = 600.0


def _job() -> str:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or ""


def owner_record() -> dict[str, Any]:
    """The record of the calling process, as its claims hold it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": _job(),
            "since": time.time()}


def secondary_rank() -> bool:
    """Whether this process is a rank other than 0 of a distributed run."""
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        if os.environ.get(name, "0") != "0":
            return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_PROCID",
                                                                          "0") != "0"


def _read(path: Path) -> dict[str, Any] | None:
    for _ in range(20):  # a claim being written: its JSON appears within moments
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            time.sleep(0.05)
    return {}


def is_stale(path: Path, record: dict[str, Any], heartbeat: Path | None = None,
             stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the claim at ``path`` (holding ``record``) belongs to a process that is gone."""
    if record.get("host") == socket.gethostname():
        return not pid_alive(int(record.get("pid", -1)))
    times = [p.stat().st_mtime for p in (path, heartbeat) if p is not None and p.exists()]
    return not times or time.time() - max(times) > stale_after_s


def describe(record: dict[str, Any]) -> str:
    """``host:pid (job J) since …`` of a claim."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("since", 0)))
    job = f", job {record['job']}" if record.get("job") else ""
    return f"{record.get('host', '?')}:{record.get('pid', '?')}{job}, since {since}"


def _create(path: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


@contextmanager
def claim(path: str | os.PathLike, heartbeat: Path | None = None,
          stale_after_s: float = STALE_AFTER_S) -> Iterator[dict[str, Any] | None]:
    """Hold the claim at ``path`` while the block runs.

    Yields None when this process holds it (it is released at the end, whatever happens),
    or the record of the live process that holds it (then nothing is claimed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = owner_record()
    while not _create(path, mine):
        other = _read(path)
        if other is None:
            continue  # released meanwhile: try again
        if not is_stale(path, other, heartbeat, stale_after_s):
            yield other
            return
        # Taken over through a rename, then checked: of two processes that found the same
        # stale claim, the later one may have moved the other's fresh claim, and puts it back.
        moved = path.with_name(f"{path.name}.stale.{os.getpid()}")
        try:
            os.replace(path, moved)
        except FileNotFoundError:
            continue
        if _read(moved) != other:
            try:
                os.link(moved, path)
            except FileExistsError:
                pass
            moved.unlink(missing_ok=True)
            continue
        moved.unlink(missing_ok=True)
        print(f"{path}: took over a stale claim of {describe(other)}")
    try:
        yield None
    finally:
        if (_read(path) or {}).get("pid") == mine["pid"]:
            path.unlink(missing_ok=True)


def wait_for_rank_zero(path: str | os.PathLike, done: Path, timeout_s: float = RANK_WAIT_S
                       ) -> bool:
    """On a rank other than 0: whether its rank 0 trains this member (False: it skips it).

    Rank 0 holds the claim when the claim's process started this one (Lightning's
    launcher) or belongs to the same job (SLURM, torchrun).
    """
    path = Path(path)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if done.exists():
            return False
        record = _read(path)
        if record:
            same_host = record.get("host") == socket.gethostname()
            if (same_host and record.get("pid") == os.getppid()) or (
                    record.get("job") and record.get("job") == _job()):
                return True
            if not is_stale(path, record):
                return False  # another process's member: rank 0 skips it too
        time.sleep(0.2)
    raise TimeoutError(f"{path}: expected rank 0 of this run to claim the member within "
                       f"{timeout_s:.0f} s, found {_read(path) or 'no claim'}")
