"""Reliability edges: what slatectl does on a full disk or under a file-size limit, on a read-only home,
on refused resumes, on signals and on odd arguments (each test reproduces a failure seen before its fix)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.registry import open_registry

runner = CliRunner()

FILE_SIZE_LIMIT = 500 * 1024  # bytes: room for the registry, not for a 200-episode dataset


def slatectl_under_file_limit(args: list[str], cwd: Path, limit: int = FILE_SIZE_LIMIT) -> subprocess.CompletedProcess:
    """Run `slatectl ARGS` in a child process whose files may not grow beyond `limit` bytes (`ulimit -f`)."""
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLATECTL_THREADS": "1", "MINARI_DATASETS_PATH": str(cwd / "minari"),
           "COLUMNS": "200"}
    env.pop("SLATECTL_HOME", None), env.pop("SLATECTL_REGISTRY_URL", None)
    return subprocess.run([sys.executable, "-c", "from slatectl.cli import main; main()", "--home", str(cwd / "home"),
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit_file_size)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("fmt", ["npz", "minari"])
def test_collect_under_a_file_size_limit_fails_in_one_line_and_leaves_nothing(tmp_path, fmt):
    if fmt == "minari":
        pytest.importorskip("h5py")
    result = slatectl_under_file_limit(["collect", "--quality", "random", "--env", "focused_topdown",
                                        "--episodes", "200", "--format", fmt], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: could not write"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    assert files_under(tmp_path / "home" / "scratch") == []  # the partial file went with its scratch folder
    assert files_under(tmp_path / "home" / "artifacts") == [] and files_under(tmp_path / "minari") == []
    with open_registry(home=tmp_path / "home") as registry:
        assert registry.list_datasets() == []
