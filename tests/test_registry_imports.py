"""The registry's structure: every module imports on its own in a fresh interpreter, in any order; the
registry and storage import nothing above them (no simulator, CLI, training, agents, collection); no
function-local imports and no private names imported across modules in the registry."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_MODULES = sorted(f"slatectl.registry.{p.stem}" for p in (ROOT / "registry").glob("*.py") if p.stem != "__init__")
STORAGE_MODULES = sorted(f"slatectl.storage.{p.stem}" for p in (ROOT / "storage").glob("*.py") if p.stem != "__init__")
ABOVE = ("slatectl.sim", "slatectl.cli", "slatectl.train", "slatectl.agents", "slatectl.collect", "slatectl.pretrain",
         "torch", "typer", "click")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_module_lists_are_not_empty():
    assert "slatectl.registry.api" in REGISTRY_MODULES and "slatectl.storage.store" in STORAGE_MODULES


@pytest.mark.parametrize("module", [*REGISTRY_MODULES, *STORAGE_MODULES, "slatectl.domain"])
def test_each_module_imports_alone_and_loads_nothing_above_it(module):
    code = (f"import sys, {module}\n"
            f"above = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'typer', 'click') "
            f"or any(m == a or m.startswith(a + '.') for a in {ABOVE!r}))\n"
            "print(','.join(above))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} loads {result.stdout.strip()}"


@pytest.mark.parametrize("seed", range(4))
def test_all_registry_modules_import_in_any_order(seed):
    order = list(REGISTRY_MODULES)
    if seed == 0:
        order.reverse()
    else:
        random.Random(seed).shuffle(order)
    result = run_python("".join(f"import {m}\n" for m in order))
    assert result.returncode == 0, f"order {order}: {result.stderr}"


def _python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


def test_no_function_local_imports_in_the_registry():
    offenders = []
    for path in _python_files("registry"):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                offenders += [f"{path.name}:{node.lineno}" for node in ast.walk(function)
                              if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert offenders == []


def test_no_private_names_imported_across_registry_modules():
    offenders = []
    for path in _python_files("registry") + _python_files("storage"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slatectl."):
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert offenders == []


def test_the_facade_is_one_class_with_the_public_names_callers_use():
    from slatectl.registry import Registry

    assert Registry.__mro__ == (Registry, object)  # no mixins
    used = {"start_run", "claim_run", "heartbeat", "finish_run", "run_liveness", "get_run", "list_runs",
            "record_validation", "validations", "run_disk_usage", "register_checkpoint", "record_test_return",
            "get_checkpoint", "list_checkpoints", "checkpoint_envs", "load_checkpoint_state", "checkpoint_path",
            "register_artifact", "get_artifact", "find_artifact", "list_artifacts", "artifact_path",
            "read_artifact_bytes", "load_artifact_state", "record_policy_return", "policy_return",
            "prune_resume_states", "promote_checkpoint", "active_promotion", "promoted_checkpoint",
            "promotion_history", "active_promotions", "suggest_checkpoint", "register_dataset", "get_dataset",
            "list_datasets", "dataset_path", "dataset_lineage", "verify", "gc", "overview", "store", "url",
            "schema_version", "engine", "close"}
    assert used <= set(dir(Registry))


def test_one_config_hash_for_the_whole_project():
    from dataclasses import dataclass

    from slatectl import config_tools
    from slatectl.registry import config_hash

    @dataclass
    class Params:
        gamma: float = 0.8
        hidden: tuple = (256,)

    # config_tools may re-export it (or no longer have it); it never computes its own.
    assert getattr(config_tools, "config_hash", config_hash) is config_hash
    assert config_hash(Params()) == config_hash({"hidden": [256], "gamma": 0.8})
    hits = [p for p in ROOT.glob("slatectl/**/*.py") if "def config_hash" in p.read_text()]
    hits += [p for p in ROOT.glob("registry/*.py") if "def config_hash" in p.read_text()]
    assert [p.relative_to(ROOT).as_posix() for p in hits] == ["registry/hashing.py"]
