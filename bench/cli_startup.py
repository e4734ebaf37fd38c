"""Wall time of light CLI commands (no torch, no Lightning): best and median of N runs each.

    python bench/cli_startup.py [--runs 7]

Runs each command in a fresh process against an empty temporary home, as a user would type it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time

COMMANDS = [["--help"], ["--version"], ["env", "list"], ["env", "show", "focused_mix"], ["ckpt", "list"],
            ["ckpt", "history", "--json"], ["inspect"], ["registry", "verify"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    slatectl = shutil.which("slatectl")
    home = tempfile.mkdtemp()
    subprocess.run([slatectl, "--home", home, "ckpt", "list"], capture_output=True, check=True)  # create it once
    print(f"{'command':28} {'best':>7} {'median':>7}")
    for command in COMMANDS:
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run([slatectl, "--home", home, *command], capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        print(f"{'slatectl ' + ' '.join(command):28} {min(times):7.3f} {statistics.median(times):7.3f}")
    shutil.rmtree(home)


if __name__ == "__main__":
    main()
