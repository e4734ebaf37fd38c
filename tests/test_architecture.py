"""The dependency rules of docs/architecture.md, checked on the source: every `slatectl.*` import of a
module is allowed for its package. Dependencies point one way — cli → (collect, train) → (agents,
pretrain) → sim — and the registry and storage import nothing above them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder → the import name it is installed under (pyproject.toml maps the top-level folders).
SOURCE_FOLDERS = {"slatectl": "slatectl", "registry": "slatectl.registry", "storage": "slatectl.storage"}

FOUNDATION = {"errors", "domain", "settings", "device", "threads", "config_tools", "__init__", "configs"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "domain": set(), "settings": {"errors"}, "device": {"errors", "domain"}, "threads": set(),
    "config_tools": {"errors"}, "__init__": set(),
    "storage": {"errors"},
    "registry": {"errors", "domain", "settings", "storage", "__init__"},
    "sim": FOUNDATION,
    "harness": FOUNDATION,
    "agents": FOUNDATION | {"sim", "harness"},
    "pretrain": FOUNDATION | {"sim", "harness"},
    "train": FOUNDATION | {"sim", "harness", "agents", "pretrain", "registry", "storage"},
    "collect": FOUNDATION | {"sim", "harness", "agents", "pretrain", "registry", "storage", "train"},
    # slatectl.lightning (RegistryCheckpoint) registers checkpoints through train's one registration path.
    "lightning": FOUNDATION | {"registry", "storage", "train"},
    "sweep": FOUNDATION | {"sim", "harness", "agents", "pretrain", "registry", "storage", "train",
                           "collect"},
}


def _unit(module: str) -> str:
    """The package (or top-level module) of slatectl that `module` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> list[tuple[str, str, str]]:
    found = []
    for folder, package in SOURCE_FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            module = ".".join([package, *path.relative_to(ROOT / folder).with_suffix("").parts])
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets = [node.module]
                elif isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                else:
                    continue
                found += [(str(path.relative_to(ROOT)), _unit(module), _unit(t)) for t in targets
                          if t == "slatectl" or t.startswith("slatectl.")]
    return found


def test_every_import_follows_the_dependency_direction():
    imports = _imports()
    assert len(imports) > 100  # the scan sees the code base
    violations = [f"{path}: {source} imports {target}" for path, source, target in imports
                  if source != "cli" and source != target and target not in ALLOWED[source]]
    assert violations == []


def test_the_rules_reject_an_upward_import():
    assert "train" not in ALLOWED["registry"] and "cli" not in ALLOWED["train"] and "sim" not in ALLOWED["storage"]
    assert "collect" not in ALLOWED["train"] and "train" not in ALLOWED["agents"]
    assert "lightning" not in ALLOWED["train"] and "lightning" not in ALLOWED["registry"]
