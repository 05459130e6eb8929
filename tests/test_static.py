"""Static checks as part of the test suite (what CI runs): ruff lint, ruff format, mypy.

They run the tools on the repository as a developer would (`ruff check`, `ruff format --check`,
`mypy`), so a commit that breaks formatting or typing fails the README's test command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "benchmarks", "examples"]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` brings it")
    return exe


def test_ruff_lint_is_clean():
    r = _run(_tool("ruff"), "check", *PATHS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    r = _run(_tool("ruff"), "format", "--check", *PATHS)
    assert r.returncode == 0, "run `ruff format src tests benchmarks examples`:\n" + r.stdout


def test_mypy_is_clean():
    r = _run(_tool("mypy"))
    assert r.returncode == 0, r.stdout + r.stderr
