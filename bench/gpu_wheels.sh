#!/usr/bin/env bash
# The wheels that bench/gpu_check.sh needs on the GPU machine and its image lacks, downloaded HERE (the GPU
# machine reaches no package registry): sqlmodel with pydantic, pydantic-core and SQLAlchemy, gymnasium,
# pytorch-lightning with lightning-utilities and torchmetrics (GeMS/MF pretraining run on its Trainer), and
# typing-extensions (used when the image's is older than pydantic wants).
# Everything else the check imports (a CUDA torch, numpy, pytest, hypothesis, typer, rich, pyyaml) is in that
# image. Versions are this environment's (what CI tests) where it has the package.
#
#   bash bench/gpu_wheels.sh [DEST]    # DEST defaults to .gpu_wheels (git-ignored); carry it with the GPU run
#
# GPU_PYTHON_VERSION (default 3.12, the GPU image's python3) picks the binary wheels' Python. Needs pip and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu_wheels}
PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
PACKAGES=(sqlmodel sqlalchemy pydantic pydantic-core annotated-types typing-inspection typing-extensions gymnasium farama-notifications
          pytorch-lightning lightning-utilities torchmetrics)
pins=()
for package in "${PACKAGES[@]}"; do
    version=$("$PY" -m pip show "$package" 2>/dev/null | awk '/^Version:/ {print $2}')
    pins+=("$package${version:+==$version}")
done
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version "$PYTHON_VERSION" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "${pins[@]}"
echo "wheels for Python $PYTHON_VERSION in $DEST ($(du -sh "$DEST" | cut -f1)): carry '$DEST' with \`bash bench/gpu_check.sh\`"
ls "$DEST"
