#!/usr/bin/env bash
# The project's checks, cheapest first: lint (ruff), import contracts (import-linter: who may
# import whom, docs/ARCHITECTURE.md), types (mypy, strict for hive_core.base, protocol, trust
# and economy), then the tests (pytest; arguments are passed to it). Run ./setup.sh --test once.
set -euo pipefail
cd "$(dirname "$0")"
bin=.venv/bin
if [ ! -x "$bin/pytest" ] || [ ! -x "$bin/lint-imports" ]; then
  echo "test.sh: the test tools are missing: run ./setup.sh --test first" >&2
  exit 2
fi
echo "check: ruff"
"$bin/ruff" check hive_core world cadencia tests bench
echo "check: import contracts"
"$bin/lint-imports" --no-logo --no-cache | sed -n '/^Contracts:/p'
echo "check: mypy"
"$bin/mypy"
echo "check: pytest"
exec "$bin/python" -m pytest "$@"
