"""Start-up cost of the CLI: `--help`, `--version`, `env list|show` and registry-only commands import
neither torch nor Lightning (each would add more than a second to every command on a small machine).

Each case runs in a fresh interpreter (the test process itself has torch loaded long ago) and reports
which heavy modules the command left in `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "matplotlib")

# Runs one CLI invocation in-process, then prints the heavy modules it imported as the last stdout line.
DRIVER = """
import json, sys
from slatectl.cli import main
sys.argv = ["slatectl", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps({"code": code, "heavy": heavy}))
""" % (HEAVY,)


def run_cli(args: list[str], home) -> dict:
    completed = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(["--home", str(home), *args])],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_torch_and_no_lightning():
    code = f"import sys, slatectl.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


@pytest.mark.parametrize("args, code", [
    (["--help"], 0), (["--version"], 0), (["env", "list"], 0), (["env", "show", "focused_mix", "--json"], 0),
    (["env", "--help"], 0), (["ckpt", "list"], 0), (["ckpt", "history", "--json"], 0), (["ckpt", "show", "1"], 2),
    (["inspect"], 0), (["inspect", "run", "1"], 2), (["registry", "verify"], 0), (["ckpt", "promote", "--help"], 0),
    (["sweep", "list"], 0), (["sweep", "status", "1"], 2),
])
def test_fast_commands_import_no_torch(args, code, tmp_path):
    outcome = run_cli(args, tmp_path / "home")
    assert outcome["code"] == code
    assert outcome["heavy"] == [], f"{args} imported {outcome['heavy']}"


def test_a_compute_command_still_loads_torch_when_it_runs(tmp_path):
    # The lazy group must import the command's module when it runs (here its --help), not skip it.
    outcome = run_cli(["env", "rollout", "--help"], tmp_path / "home")
    assert outcome["code"] == 0 and "torch" in outcome["heavy"]


def test_the_check_sees_lightning_where_it_is_used():
    # pytorch-lightning is a dependency (slatectl.lightning, pretraining); the cases above would pass
    # vacuously if the scan could not see it, so import the module that uses it and look.
    code = f"import sys, slatectl.lightning; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert {"torch", "pytorch_lightning"} <= set(json.loads(completed.stdout.strip().replace("'", '"')))


def test_import_slatectl_sim_registers_gym_ids_without_torch():
    code = ("import sys, gymnasium, slatectl.sim; "
            "print('slatectl/TopicRec-diffuse_mix-v0' in gymnasium.envs.registry, 'torch' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.stdout.split() == ["True", "False"], completed.stderr
