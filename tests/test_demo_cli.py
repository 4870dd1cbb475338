"""The main job for now: ``h2mv demo``, through the real console entry point."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from h2mv_hybrid import cli
from h2mv_hybrid.demo import demo

ROOT = Path(__file__).resolve().parents[1]


def test_demo_function_balances_and_plots(tmp_path, capsys):
    result = demo(cells=5, years=2, out=str(tmp_path))
    out = capsys.readouterr().out
    assert result["max_abs_residual_mm"] < 1e-9
    for climate in ("tropical-wet", "monsoon", "arid", "temperate", "boreal-snowy"):
        assert climate in out
    assert "residual" in out and "P_in" in out
    png = Path(result["figure"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert list(tmp_path.iterdir()) == [png]  # no temporary file left behind
    assert png.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_every_experiment_config_runs_through_the_cli(tmp_path, capsys):
    configs = sorted((ROOT / "experiments").glob("demo*.yaml"))
    assert configs
    for config in configs:
        cli.main(["demo", "--config", str(config), "--out", str(tmp_path / config.stem),
                  "--years", "1"])
        assert (tmp_path / config.stem / "bucket.png").exists()
    assert "water balance" in capsys.readouterr().out


def test_cli_rejects_unknown_command_and_bad_options(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["nope"])
    assert "unknown command 'nope'; valid: fit, validate, test, predict, cv, compare, identify, import, demo, synth, analyze, gr4j, catchments, recovery, sensitivity" in str(err.value)
    with pytest.raises(SystemExit):
        cli.main(["demo", "--dtype", "float16"])
    assert "float32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        cli.main(["demo", "--cells", "0", "--out", "unused"])
    assert "cells and years: expected ≥ 1, found cells=0" in str(err.value)


def test_console_script(tmp_path):
    # the installed entry point sits next to the interpreter (venv) or on PATH
    script = Path(sys.executable).with_name("h2mv")
    script = str(script) if script.exists() else shutil.which("h2mv")
    assert script, "the h2mv console script is not installed"
    run = subprocess.run([script, "demo", "--cells", "2", "--years", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert "figure:" in run.stdout and (tmp_path / "bucket.png").exists()


def test_module_entry_point_prints_usage():
    run = subprocess.run([sys.executable, "-m", "h2mv_hybrid.cli"], capture_output=True,
                         text=True, check=True)
    assert "demo" in run.stdout


def test_ctrl_c_ends_the_h2mv_command_in_one_line_with_status_130(monkeypatch, capsys):
    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    with pytest.raises(SystemExit) as err:
        cli.entry()
    assert err.value.code == 130
    assert capsys.readouterr().err.startswith("h2mv: interrupted; the last checkpoint")
