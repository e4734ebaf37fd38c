#!/usr/bin/env bash
# Make a PostgreSQL server and the psycopg driver available for the registry's PostgreSQL tests.
# Idempotent; never fails CI: without apt (or network) the postgres tests skip with a reason.
set -u

have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }

if ! have_server; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || echo "postgres.sh: apt-get update failed; postgres tests will be skipped"
    $SUDO apt-get install -y -qq --no-install-recommends postgresql \
      || echo "postgres.sh: could not install postgresql; postgres tests will be skipped"
  else
    echo "postgres.sh: no apt-get; postgres tests will be skipped"
  fi
fi

# The driver (also in pyproject's dev extra); use the active environment's python.
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import psycopg" >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q "psycopg[binary]>=3.1" || echo "postgres.sh: could not install psycopg; postgres tests will be skipped"
fi

exit 0
