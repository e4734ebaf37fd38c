#!/usr/bin/env bash
# The GPU check of the CUDA path, as ONE run on one H100/H200 (≤ 8 minutes): the CUDA-vs-CPU equality
# tests, then every GPU benchmark at its target size, then one summary table (check, figure, target,
# met?), also written to $OUT/gpu_check.md when $OUT is set (with every step's log in
# $OUT/gpu_check_logs.txt).
#
#   bash bench/gpu_check.sh                 # on the GPU machine, from the repository root
#   bash bench/gpu_check.sh --cpu-dry-run   # the same steps at tiny sizes on the CPU (GPU_CHECK_DRY_RUN=1 too)
#
# Python: $PYTHON if set, else the first of .venv/bin/python, python3, python whose torch imports and (GPU
# check) sees CUDA. A venv made on the 2-core machine cannot serve on the GPU machine: it is ~1 GB (the
# device tool carries at most 64 MiB), its interpreter path does not exist there and its torch is the CPU
# build. The GPU machine's own python3 has a CUDA torch, numpy, pytest, hypothesis, typer, rich and pyyaml,
# but not sqlmodel (with pydantic and SQLAlchemy) or gymnasium: make their wheels here with
# `bash bench/gpu_wheels.sh` (into .gpu_wheels/, git-ignored) and carry `.gpu_wheels` with the run; this
# script installs the missing ones from there into a temporary folder (offline, --no-deps). slatectl itself
# is staged from this working tree (the folders pyproject.toml maps into the package), so the check always
# runs the code it is run from. If an import still fails, the check stops at once, saying what is missing,
# instead of spending the device time on failing steps.
#
# Each step runs under `timeout`, inside a global budget (GPU_CHECK_BUDGET_S, default 450 s) so the whole
# check ends in time; a failing or timed-out step is recorded as FAIL and the check goes on. Exit status: 0
# when every step ran and every target was met (dry run: every step ran), else 1. With $OUT set, the table
# goes to $OUT/gpu_check.md and every step's log to one file, $OUT/gpu_check_logs.txt (the device tool
# returns at most 8 files). The benchmarks' common flags are `--device cpu|cuda` and `--quick` (tiny sizes);
# the dry run uses them.
set -u

cd "$(dirname "$0")/.." || exit 1
DRY=0
if [[ "${1:-}" == "--cpu-dry-run" || "${GPU_CHECK_DRY_RUN:-0}" == "1" ]]; then DRY=1; fi
WHEELS=${GPU_CHECK_WHEELS:-.gpu_wheels}
if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
else
    if [[ $DRY == 1 ]]; then WANT='import torch'; else WANT='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; fi
    PY=python3
    for candidate in .venv/bin/python python3 python; do
        if { [[ -x $candidate ]] || command -v "$candidate" > /dev/null 2>&1; } && "$candidate" -c "$WANT" > /dev/null 2>&1; then
            PY=$candidate; break
        fi
    done
fi
BUDGET=${GPU_CHECK_BUDGET_S:-$([[ $DRY == 1 ]] && echo 240 || echo 450)}
# The 2-core CPU's solo SAC+GeMS training steps/s (1 episode + 1 update per step), BENCHMARKS.md
# "Training throughput" (reference semantics, parallel_episodes=1); the GPU target is 3× this.
CPU_2CORE_STEPS_PER_S=${CPU_2CORE_STEPS_PER_S:-6.4}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
RESULTS=$LOGS/results.tsv
: > "$RESULTS"
STARTED=$SECONDS

# -- 0. Python, slatectl and its dependencies
SITE=$LOGS/site
DEPS=$LOGS/deps
echo "== python: $PY ($($PY -c 'import sys; print(sys.version.split()[0])' 2>&1))"
# slatectl from this tree: each folder pyproject.toml maps (slatectl, registry/ → slatectl.registry, …) copied
# to where the package puts it, data files included; nothing is built, nothing is fetched.
$PY - "$SITE" <<'EOF' || echo "staging slatectl failed"
import shutil, sys, tomllib
from pathlib import Path
site = Path(sys.argv[1])
folders = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
for package, folder in sorted(folders.items(), key=lambda item: item[0].count(".")):
    shutil.copytree(folder, site / package.replace(".", "/"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
EOF
export PYTHONPATH=$SITE:$DEPS${PYTHONPATH:+:$PYTHONPATH}
# Third-party modules the tests and benchmarks import; a missing one is installed from $WHEELS if a wheel is there.
# typing_extensions is there, but may be older than pydantic needs: a newer wheel of it replaces it.
MODULES="numpy typer rich yaml sqlmodel sqlalchemy pydantic pydantic_core annotated_types typing_inspection gymnasium farama_notifications pytest hypothesis pytorch_lightning lightning_utilities torchmetrics"
MISSING_WHEELS=$($PY - "$WHEELS" $MODULES <<'EOF'
import importlib.metadata, importlib.util, re, sys
from pathlib import Path
folder, modules = Path(sys.argv[1]), sys.argv[2:]
missing = {m for m in modules if importlib.util.find_spec(m) is None}
def numbers(version):
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])
def wanted(wheel):
    dist, version = wheel.name.split("-")[:2]
    name = re.sub(r"[-.]+", "_", dist).lower()
    if name == "typing_extensions":
        try:
            return numbers(importlib.metadata.version("typing_extensions")) < numbers(version)
        except importlib.metadata.PackageNotFoundError:
            return True
    return {"pyyaml": "yaml"}.get(name, name) in missing
print(" ".join(str(w) for w in sorted(folder.glob("*.whl")) if wanted(w)) if folder.is_dir() else "")
EOF
)
if [[ -n "$MISSING_WHEELS" ]]; then
    echo "== installing from $WHEELS: $MISSING_WHEELS"
    # shellcheck disable=SC2086  # one path per word
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$DEPS" $MISSING_WHEELS 2>&1 | tail -5
fi
echo "== torch"
# PYTHONSAFEPATH (as for pytest below): the working directory is not on sys.path, so this imports the staged slatectl.
PYTHONSAFEPATH=1 $PY - <<'EOF' 2>&1 | tee "$LOGS/torch.log"
import torch
import slatectl, slatectl.registry, slatectl.train.loop, slatectl.train.population, slatectl.collect.collector, pytest, hypothesis
import pytorch_lightning, slatectl.pretrain.lightning_engine
print(f"slatectl from {slatectl.__path__[0]}")
print(torch.__version__, torch.cuda.is_available())
EOF
SKIP_ALL=0
if ! grep -qE " (True|False)$" "$LOGS/torch.log"; then
    printf 'imports (torch, slatectl and its dependencies)\t%s\timportable\tFAIL\n' "$(grep -E 'Error' "$LOGS/torch.log" | tail -1)" >> "$RESULTS"
    echo "A module is missing (see above): make the wheels with 'bash bench/gpu_wheels.sh' on a machine with PyPI and"
    echo "carry .gpu_wheels with the run (or set PYTHON to a Python that has them). Nothing else is run."
    SKIP_ALL=1
elif [[ $DRY == 0 ]] && ! grep -q " True$" "$LOGS/torch.log"; then
    printf 'torch\t%s\tCUDA available\tFAIL\n' "$(tail -1 "$LOGS/torch.log")" >> "$RESULTS"
    echo "torch sees no CUDA GPU: nothing to check (use --cpu-dry-run for the CPU rehearsal)."
    SKIP_ALL=1
fi
if [[ $DRY == 1 ]]; then DEVICE=cpu; else DEVICE=cuda; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$LOGS/gpu.log"; fi

# extract LOG ROW_REGEX COLUMN_REGEX: the number in the first table row matching ROW_REGEX, in the first
# column whose header matches COLUMN_REGEX (Markdown tables as the bench scripts print them: a header row,
# then a |---| row); empty when not found.
extract() {
    $PY - "$1" "$2" "$3" <<'EOF'
import re, sys
path, row_pattern, column = sys.argv[1:]
header, previous = None, None
for line in open(path, errors="replace"):
    line = line.strip()
    if not line.startswith("|"):
        continue
    cells = [c.strip() for c in line.strip("|").split("|")]
    if all(set(c) <= set("-: ") for c in cells):
        header = previous
        continue
    previous = cells
    if header is None or not re.search(row_pattern, line):
        continue
    index = next((i for i, c in enumerate(header) if re.search(column, c)), None)
    number = re.search(r"-?[\d,]*\.?\d+", cells[index]) if index is not None and index < len(cells) else None
    if number:
        print(number.group(0).replace(",", ""))
        break
EOF
}

# run NAME TIMEOUT_S COMMAND...: run one step under the remaining budget; its log is $LOGS/NAME.log.
run() {
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET - (SECONDS - STARTED) ))
    if (( SKIP_ALL == 1 || left < 10 )); then
        echo "== $name: skipped (no GPU or no time left)"; echo "skipped" > "$LOGS/$name.log"; return 99
    fi
    (( limit > left )) && limit=$left
    echo "== $name (≤ ${limit} s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOGS/$name.log"
    echo "-- $name: exit $rc after $(( SECONDS - t0 )) s"
    return $rc
}

# record CHECK RC FIGURE OP TARGET [UNIT]: one summary row; met? is yes/no for the GPU, "ran" in the dry run.
record() {
    local check=$1 rc=$2 figure=$3 op=$4 target=$5 unit=${6:-} met
    if (( rc == 124 || rc == 137 )); then met="FAIL (timeout)"
    elif (( rc == 99 )); then met="FAIL (skipped)"
    elif (( rc != 0 )); then met="FAIL (exit $rc)"
    elif [[ -z "$figure" ]]; then met="FAIL (no figure in the log)"
    elif [[ $DRY == 1 ]]; then met="ran (dry run)"
    elif $PY -c "import sys; f, t = float('$figure'), float('$target'); sys.exit(0 if (f >= t if '$op' == '>=' else f <= t) else 1)"; then met="yes"
    else met="no"
    fi
    printf '%s\t%s\t%s %s %s\t%s\n' "$check" "${figure:-–}" "$op" "$target" "$unit" "$met" >> "$RESULTS"
}

# -- 1. CUDA-vs-CPU equality tests (simulator: tests/test_device.py; GeMS and training: tests/test_gpu_paths.py;
#       population training: tests/test_population_device.py, tests/test_stacked_agent.py; bf16-mixed updates:
#       tests/test_fabric_harness.py)
TESTS=()
for f in tests/test_device.py tests/test_gpu_paths.py tests/test_population_device.py tests/test_stacked_agent.py tests/test_gems_lightning.py tests/test_fabric_harness.py; do
    if [[ -f $f ]]; then TESTS+=("$f"); else printf 'tests: %s\t–\tpresent\tFAIL (missing)\n' "$f" >> "$RESULTS"; fi
done
if (( ${#TESTS[@]} )); then
    # PYTHONSAFEPATH: the repository root is not put on sys.path, so `slatectl` is the staged package (the bare
    # ./slatectl folder lacks its mapped subpackages); pytest still puts tests/ there for the helper modules.
    run tests 200 env PYTHONSAFEPATH=1 $PY -m pytest -q -p no:cacheprovider "${TESTS[@]}"; rc=$?
    passed=$(grep -Eo '[0-9]+ passed' "$LOGS/tests.log" | tail -1 | grep -Eo '[0-9]+')
    skipped=$(grep -Eo '[0-9]+ skipped' "$LOGS/tests.log" | tail -1 | grep -Eo '[0-9]+')
    record "equality tests (${TESTS[*]}): passed, ${skipped:-0} skipped" $rc "${passed:-}" ">=" 1 "and none failed"
fi

if [[ $DRY == 1 ]]; then QUICK=(--quick); else QUICK=(); fi

# -- 2. GeMS pretraining: batches of 256 per second (reference size = 527k batches in ≤ 10 min)
if [[ $DRY == 1 ]]; then SIZE=(); else SIZE=(--episodes 20000); fi
run gems 100 $PY bench/gems_throughput.py --device $DEVICE "${QUICK[@]}" "${SIZE[@]}"; rc=$?
record "GeMS pretraining batches/s (batch 256)" $rc "$(extract "$LOGS/gems.log" 'GeMS batches/s' '^value$')" ">=" 900

# -- 2b. GeMS pretraining: the Lightning Trainer (the default engine) against the plain loop, ABBA in one run
if [[ $DRY == 1 ]]; then SIZE=(); else SIZE=(--episodes 5000 --epochs 3); fi
run gems_ab 90 $PY bench/gems_throughput.py --device $DEVICE --ab "${QUICK[@]}" "${SIZE[@]}"; rc=$?
record "GeMS Lightning Trainer / plain loop, batches/s" $rc "$(extract "$LOGS/gems_ab.log" 'Lightning / loop' 'wall')" ">=" 0.95

# -- 3. Solo SAC+GeMS training steps/s (1 episode + 1 update per step), against the 2-core CPU
run train 80 $PY bench/train_throughput.py --device $DEVICE "${QUICK[@]}"; rc=$?
record "solo SAC+GeMS training steps/s ($DEVICE)" $rc "$(extract "$LOGS/train.log" 'solo training steps/s' '^value$')" \
    ">=" "$($PY -c "print(round(3 * $CPU_2CORE_STEPS_PER_S, 2))")" "(3 × the 2-core CPU's $CPU_2CORE_STEPS_PER_S)"

# -- 4. Simulator: user-steps/s at B = 1M users, random policy
if [[ $DRY == 1 ]]; then B=1024; SIZE=(--batches $B --repeats 1); else B=1048576; SIZE=(--batches $B --repeats 2); fi
run sim 100 $PY bench/sim_throughput.py --device $DEVICE "${QUICK[@]}" "${SIZE[@]}"; rc=$?
B_GROUPED=$($PY -c "print(f'{$B:,}')")
record "simulator user-steps/s (B = $B, random policy)" $rc \
    "$(extract "$LOGS/sim.log" "random *\| *(${B}|${B_GROUPED}) *\|" 'user-steps/s')" ">=" 50000000

# -- 5. Collection with a SAC+GeMS checkpoint: transitions/s and the 10,000-episode npz end to end
if [[ $DRY == 1 ]]; then SIZE=(--episodes 200 --batch 200 --agents sac-gems); else SIZE=(--episodes 10000 --batch 10000 --agents random,sac-gems); fi
run collect 110 $PY bench/collect_throughput.py --device $DEVICE "${QUICK[@]}" "${SIZE[@]}"; rc=$?
record "collection transitions/s, policy + simulation (SAC+GeMS)" $rc "$(extract "$LOGS/collect.log" 'sac-gems' 'transitions/s')" ">=" 1000000
record "collection of the 10,000-episode npz end to end, s (SAC+GeMS)" $rc \
    "$(extract "$LOGS/collect.log" 'sac-gems' '^end-to-end s$|^seconds$')" "<=" 5

# -- 6. Population training: aggregate steps/s of K = 60 members against the solo run
if [[ $DRY == 1 ]]; then K=2; SIZE=(--sizes 1,$K --steps 2); else K=60; SIZE=(--sizes 1,$K); fi
run population 130 $PY bench/population_throughput.py --device $DEVICE "${QUICK[@]}" "${SIZE[@]}"; rc=$?
record "population K=$K aggregate steps/s × solo" $rc "$(extract "$LOGS/population.log" "^\| [^|]*\| *$K *\|" 'solo')" ">=" 30

# -- 7. (information) the GPU machine's own CPU, 2 threads, for the train row above
if [[ $DRY == 1 ]]; then SIZE=(--quick); else SIZE=(--updates 10 --steps 5 --episodes 5); fi
run train_cpu 45 $PY bench/train_throughput.py --device cpu --threads 2 "${SIZE[@]}"; rc=$?
record "solo training steps/s on this machine's CPU, 2 threads (information)" $rc \
    "$(extract "$LOGS/train_cpu.log" 'solo training steps/s' '^value$')" ">=" 0

# -- summary
ELAPSED=$(( SECONDS - STARTED ))
{
    echo "## GPU check ($([[ $DRY == 1 ]] && echo "CPU dry run, tiny sizes: figures are not the targets'" || echo "device: $(cat "$LOGS/gpu.log" 2>/dev/null)"))"
    echo
    echo "torch: $(tail -1 "$LOGS/torch.log"); $(date -u '+%Y-%m-%d %H:%M UTC'); ${ELAPSED} s in all; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "| check | figure | target | met? |"
    echo "|---|---:|---|---|"
    while IFS=$'\t' read -r check figure target met; do echo "| $check | $figure | $target | $met |"; done < "$RESULTS"
} > "$LOGS/gpu_check.md"
echo
cat "$LOGS/gpu_check.md"
if [[ -n "${OUT:-}" ]]; then
    # One file for all the logs: the device tool brings back at most 8 files.
    for log in "$LOGS"/*.log; do echo "===== $(basename "$log")"; cat "$log"; done > "$OUT/gpu_check_logs.txt"
    cp "$LOGS/gpu_check.md" "$OUT/gpu_check.md"
    echo "written to $OUT/gpu_check.md and $OUT/gpu_check_logs.txt"
fi
if grep -qE $'\t(FAIL|no)' "$RESULTS"; then exit 1; fi
exit 0
