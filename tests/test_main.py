"""The command line (rltrain/__main__.py): it explains itself, and `runs` reads the directory it is given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rltrain.__main__ import COMMANDS, main
from rltrain.config import parse_config
from rltrain.run import train

PNG = b"\x89PNG\r\n\x1a\n"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rltrain", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command_with_one_line(tmp_path: Path) -> None:
    proc = _run("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for name in ("train", "init", "runs", "submit", "worker", "eval", "envs", "models"):
        (line,) = [x for x in proc.stdout.splitlines() if x.startswith(f"  {name} ")]
        assert len(line.split(maxsplit=1)[1]) > 20
    assert "runs show ID | runs cancel ID | runs plot ID" in proc.stdout
    bare = _run(cwd=tmp_path)
    assert bare.returncode == 2 and "commands:" in bare.stderr


@pytest.mark.parametrize("command", [*COMMANDS, "runs show", "runs cancel", "runs plot"])
def test_every_command_takes_help_and_does_nothing_else(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m rltrain") and "status" not in out  # not the runs table
    assert not list(tmp_path.iterdir())


def test_an_unknown_command_names_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["server", "--config", "x.toml"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'server'" in err and all(name in err for name in COMMANDS)


def test_runs_reads_the_directory_it_is_given_and_plots_runs_side_by_side(run_config, tmp_path: Path) -> None:
    for run_id, lr in (("fast", 1e-2), ("slow", 1e-4)):
        train(parse_config(run_config(max_steps=2, learning_rate=lr, run__id=run_id)))
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = _run("runs", "--runs", str(runs), cwd=elsewhere)
    assert listed.returncode == 0
    assert {line.split()[0] for line in listed.stdout.splitlines()[1:]} == {"fast", "slow"}
    assert len(_run("runs", cwd=elsewhere).stdout.splitlines()) == 1  # $RLTRAIN_RUNS or ./runs: empty
    shown = _run("runs", "show", "fast", "--runs", str(runs), cwd=elsewhere)
    assert shown.returncode == 0 and '"id": "fast"' in shown.stdout

    plotted = _run("runs", "--runs", str(runs), "plot", "fast", "slow", "--out", "both.png", cwd=elsewhere)
    assert plotted.returncode == 0, plotted.stderr
    both = (elsewhere / "both.png").read_bytes()
    assert both.startswith(PNG) and both != (runs / "fast" / "curves.png").read_bytes()
    missing = _run("runs", "--runs", str(runs), "plot", "fast", "nope", cwd=elsewhere)
    assert (
        missing.returncode == 2 and missing.stderr.strip() == f"rltrain: runs plot: no run 'nope' in {runs}"
    )
