"""Disk full (or file too large) while the registry writes: one clear message, exit 1, nothing
half-registered, the registry still usable. Simulated two ways: os.fsync failing with ENOSPC inside the
store's atomic writer, and a real file-size limit (RLIMIT_FSIZE) in a child process, which makes the
kernel refuse writes to the store and to the SQLite file itself (EFBIG)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from slatectl.errors import JobFailed
from slatectl.registry import open_registry
from slatectl.storage import WriteFailed, atomic

ROOT = Path(__file__).resolve().parents[1]


def test_enospc_in_fsync_is_a_job_failure_and_leaves_nothing(reg, monkeypatch):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    real_fsync = atomic.os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(WriteFailed, match="No space left on device") as failure:
        reg.register_checkpoint(run.id, 1, {"w": torch.zeros(10)}, val_return_mean=1.0, val_return_std=0.0,
                                val_episodes=1)
    assert isinstance(failure.value, JobFailed) and failure.value.exit_code == 1
    with pytest.raises(WriteFailed):
        reg.register_artifact("mf", "focused_topdown", b"embeddings")
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert reg.list_checkpoints() == [] and reg.list_artifacts() == [] and list(reg.store.iter_keys()) == []
    reg.register_checkpoint(run.id, 1, {"w": torch.zeros(10)}, val_return_mean=1.0, val_return_std=0.0, val_episodes=1)


CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from slatectl.errors import SlatectlError
    from slatectl.registry import open_registry

    home, what, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reg = open_registry(home=home)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        if what == "store":
            reg.register_artifact("logged", "focused_topdown", b"x" * (4 * limit))
        else:  # rows big enough that the SQLite file (or its WAL) must grow past the limit
            for i in range(50):
                reg.start_run("sac-gems", "focused_topdown", i, {"blob": "y" * (limit // 4)})
        print(json.dumps({"ok": True}))
    except SlatectlError as exc:
        print(json.dumps({"ok": False, "type": type(exc).__name__, "exit": exc.exit_code, "message": exc.message}))
""")


@pytest.mark.parametrize("what", ["store", "database"])
def test_a_real_file_size_limit_gives_one_clear_message(sqlite_settings, what):
    with open_registry(sqlite_settings) as reg:
        reg.start_run("slateq", "diffuse_mix", 0, {})
        runs_before = len(reg.list_runs())
    db_size = (sqlite_settings.home / "registry.db").stat().st_size
    limit = max(256 * 1024, 2 * db_size)
    child = subprocess.run([sys.executable, "-c", CHILD, str(sqlite_settings.home), what, str(limit)],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "Traceback" not in child.stderr, child.stderr
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcome["ok"] is False and outcome["exit"] == 1, outcome
    assert "nothing" in outcome["message"] and ("Free disk space" in outcome["message"])
    with open_registry(sqlite_settings) as reg:  # still a valid registry, nothing half-registered
        assert reg.verify().ok and reg.list_artifacts() == []
        assert reg.verify().orphans == []
        if what == "store":
            assert len(reg.list_runs()) == runs_before
