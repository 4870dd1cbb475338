"""How runs stop: on SIGTERM cleanly, and on a store that vanishes loudly.

SIGTERM (a cluster scheduler's warning, ``kill PID``): a fit stops after the batch in
progress on every rank, keeps its last checkpoint (the end of the previous epoch) and exits
with status 143 and one line on how to resume; atomic writers leave no temporary store.
A store deleted while a fit reads it stops the fit with an error naming the store, instead
of NaN batches read as fill values.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from h2mv_hybrid.atomic import atomic_directory
from h2mv_hybrid.callbacks.stop import GracefulStop
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize
from h2mv_hybrid.signals import Stopped, raise_on_sigterm

ROOT = Path(__file__).resolve().parents[1]


class _Trainer:
    """The two attributes GracefulStop reads of a one-process trainer."""

    world_size = 1
    current_epoch = 3

    class strategy:  # noqa: N801
        root_device = torch.device("cpu")


def test_graceful_stop_raises_after_the_batch_only_once_a_signal_came():
    stop = GracefulStop()
    stop.on_train_batch_end(_Trainer())  # nothing received: goes on
    stop._record(signal.SIGTERM, None)
    with pytest.raises(Stopped, match="stopped by SIGTERM during training, epoch 3") as info:
        stop.on_train_batch_end(_Trainer())
    assert info.value.signum == signal.SIGTERM


def test_sigterm_inside_an_atomic_write_removes_the_temporary_directory(tmp_path):
    previous = signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        with pytest.raises(Stopped):
            with atomic_directory(tmp_path / "out.zarr") as tmp:
                (tmp / "part").write_text("half")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("signals") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=8.0, years="2001-2004", seed=1)), path)
    return str(path)


def _fit(store, root, *extra):
    return [str(Path(sys.executable).with_name("h2mv")), "fit", "--config",
            str(ROOT / "experiments/quickstart.yaml"), "--data.store", store,
            "--data.num_workers", "0", "--data.batch_size", "8",
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false", "--trainer.max_epochs", "1000",
            "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
            "--data.train_start", "2002-01-01", "--data.train_end", "2002-12-31",
            "--data.val_start", "2003-01-01", "--data.val_end", "2003-12-31",
            "--data.test_start", "2004-01-01", "--data.test_end", "2004-12-31", *extra]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stop_after_first_checkpoint(cmd, root, ranks=1):
    """Start a fit, SIGTERM it once an epoch is checkpointed; (status, seconds, stderr)."""
    err = open(root / "stderr.txt", "w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
    deadline = time.time() + 420
    while not list(root.rglob("last.ckpt")) and time.time() < deadline:
        assert proc.poll() is None, (root / "stderr.txt").read_text()[-3000:]
        time.sleep(0.5)
    kids = _children(proc.pid)
    assert len(kids) >= ranks - 1
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        for kid in kids:
            os.kill(kid, signal.SIGKILL)
        pytest.fail("the fit did not stop within 60 s of SIGTERM")
    seconds = time.time() - t0
    print(f"{ranks} rank(s): stopped {seconds:.1f} s after SIGTERM")
    for _ in range(60):  # the other ranks end on their own, after the same batch
        if not any(_alive(k) for k in kids):
            break
        time.sleep(0.5)
    assert not any(_alive(k) for k in kids), "a rank outlived rank 0"
    return status, seconds, (root / "stderr.txt").read_text()


@pytest.mark.slow
def test_sigterm_stops_a_fit_keeps_its_last_checkpoint_and_it_resumes(store, tmp_path):
    status, seconds, stderr = _stop_after_first_checkpoint(_fit(store, tmp_path), tmp_path)
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    assert seconds < 30
    assert "h2mv: stopped by SIGTERM during" in stderr and "--ckpt_path last" in stderr
    assert "Traceback" not in stderr
    last = next(tmp_path.rglob("last.ckpt"))
    epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert not list(tmp_path.rglob("*.partial"))
    resumed = subprocess.run(_fit(store, tmp_path, "--ckpt_path", "last",
                                  "--trainer.max_epochs", str(epoch + 2)),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu",
                      weights_only=False)["epoch"] == epoch + 1


@pytest.mark.slow
def test_sigterm_to_rank_0_of_a_two_process_ddp_fit_stops_both_ranks(store, tmp_path):
    cmd = _fit(store, tmp_path, "--trainer.strategy", "ddp", "--trainer.devices", "2",
               "--trainer.accelerator", "cpu")
    status, seconds, stderr = _stop_after_first_checkpoint(cmd, tmp_path, ranks=2)
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    assert seconds < 30
    # GracefulStop's words: every rank stopped after the same batch, no raise mid-collective
    assert "h2mv: stopped by SIGTERM during" in stderr


def test_a_store_deleted_while_batches_are_read_stops_with_its_name(store, tmp_path):
    from h2mv_hybrid.data.datamodule import H2MVDataModule

    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    dm = H2MVDataModule(str(copy), batch_size=8, train_start="2002-01-01",
                        train_end="2002-12-31", val_start="2003-01-01", val_end="2003-12-31",
                        test_start="2004-01-01", test_end="2004-12-31")
    dm.setup("fit")
    data = dm.batches("train")
    positions = np.arange(min(8, len(data)))
    assert torch.isfinite(data[positions]["forcing"]).all()
    shutil.rmtree(copy / "prec")  # one variable gone: its chunks would read as NaN
    with pytest.raises(FileNotFoundError, match=r"store: expected .*copy.zarr to stay in "
                                                r"place while it is read, found prec gone"):
        data[positions]
    shutil.rmtree(copy)
    with pytest.raises(FileNotFoundError, match="found its root"):
        data[positions]


@pytest.mark.slow
def test_a_fit_whose_store_is_deleted_stops_with_an_error_not_nan_losses(store, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    err = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen(_fit(str(copy), tmp_path), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 420
    while not list(tmp_path.rglob("last.ckpt")) and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
        time.sleep(0.5)
    shutil.rmtree(copy)
    status = proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert status == 1, stderr[-3000:]
    assert "h2mv fit: error: store: expected" in stderr and "to stay in place" in stderr
    assert "update skipped" not in stderr
