"""The README's code is what a user copies first: every Python block must compile,
and every complete program in it (a block that calls ``asyncio.run``) must run."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = [
    textwrap.dedent(b)
    for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
]


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_readme_python_block_compiles(block: str) -> None:
    compile(block, "README.md", "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT


def test_each_complete_readme_program_runs() -> None:
    programs = [b for b in BLOCKS if "asyncio.run(" in b]
    assert programs
    for program in programs:
        done = subprocess.run(
            [sys.executable, "-c", program],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "from" in done.stdout
