"""The built wheel installs one import name, `slatectl`, with its configs and reference tables inside, and
runs from the wheel's files alone (no top-level `registry`, `storage` or `configs` left behind)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (built,) = out.glob("slatectl-*.whl")
    return built


def test_wheel_has_exactly_one_top_level_import_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"slatectl"}
    for inside in ("slatectl/registry/__init__.py", "slatectl/storage/atomic.py", "slatectl/configs/training.yaml",
                   "slatectl/configs/envs/focused_topdown.yaml", "slatectl/configs/agents/sac-gems.yaml",
                   "slatectl/sim/data/item_embeddings_focused.npy", "slatectl/sim/data/SHA256SUMS"):
        assert inside in names, inside
    assert not any("testing" in name or "plots" in name for name in names if name.startswith("slatectl/registry/"))


def test_the_wheels_files_alone_run_the_cli(wheel, tmp_path):
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import slatectl, slatectl.cli;"
              "assert slatectl.__file__.startswith(sys.argv[1]), slatectl.__file__;"
              "sys.argv = ['slatectl', 'env', 'list', '--json']; slatectl.cli.main()")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script, str(unpacked)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"focused_topdown"' in done.stdout and '"diffuse_mix"' in done.stdout
