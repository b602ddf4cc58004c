"""Every example runs to completion (loopback only) and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CASES = {
    "embedded_agent.py": ["ran on writer: True"],
    "two_orgs.py": [
        "translated by globex: bonjour monde",
        "summarize refused by globex's policy:",
        "refused: not-permitted",
    ],
    "crash_survivor.py": ["result {'frame': 7, 'epoch': 2}", "survived the crash of executor-"],
    "shell_daemon.py": ['{"words": 9, "chars": 43}', "exit codes: [0, 0]"],
    "tune_then_deploy.py": ["deployed nodes run with the simulated settings: True"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for expected in CASES[name]:
        assert expected in out.stdout, out.stdout
    assert ": False" not in out.stdout, out.stdout


def test_demo_runs_quietly() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mesh-node"), "demo", "--quiet", "--tasks", "10"],
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10/10 tasks completed" in out.stdout
    assert "every node sees the other four: True" in out.stdout
