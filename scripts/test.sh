#!/usr/bin/env bash
# Runs the whole test suite: lint, then pytest on SQLite and — when a PostgreSQL server answers —
# on PostgreSQL too. Under CI=true a missing PostgreSQL is a failure, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

"$BIN/ruff" check hinn_core hinn_client app tests bench

DEFAULT_PG="postgresql+psycopg://postgres@127.0.0.1:5432/test"
if [ -z "${HINN_TEST_POSTGRES_URL:-}" ]; then
    if "$BIN/python" - "$DEFAULT_PG" <<'PY' 2>/dev/null; then
import sys, psycopg
url = sys.argv[1].replace("postgresql+psycopg://", "postgresql://")
psycopg.connect(url, connect_timeout=3).close()
PY
        export HINN_TEST_POSTGRES_URL="$DEFAULT_PG"
    fi
fi
if [ -z "${HINN_TEST_POSTGRES_URL:-}" ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "FAIL: CI=true but no PostgreSQL answers at $DEFAULT_PG (set HINN_TEST_POSTGRES_URL)" >&2
        exit 1
    fi
    echo "note: no PostgreSQL found; database tests run on SQLite only (set HINN_TEST_POSTGRES_URL)" >&2
else
    echo "PostgreSQL tests enabled: $HINN_TEST_POSTGRES_URL" >&2
fi
# Two processes by default (HINN_TEST_WORKERS; 0 runs in this one): on 2 cores that is 1.7x faster
# than one, and four were slower than two. Work stealing balances the minute-long tests. Arguments
# given to this script come last, so `scripts/test.sh -n 0 tests/core` runs in one process.
WORKERS="${HINN_TEST_WORKERS:-2}"
exec "$BIN/python" -m pytest -n "$WORKERS" --dist worksteal "$@"
