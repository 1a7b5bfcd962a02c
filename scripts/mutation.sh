#!/usr/bin/env bash
# `make mutation`: mutation testing of the critical modules with mutmut (configured under
# [tool.mutmut] in pyproject.toml), then the score and every surviving mutant. Not part of
# `make test`; docs/TESTING.md records the last score and explains each survivor.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
TEMPLATE=test_gpu_marketplace_mutation

rm -rf mutants
# A migrated database that every test session of the run clones (see conftest.py): hundreds of
# short sessions, two at a time, each on its own copy.
echo "Migrating the template database $TEMPLATE..."
TEST_DATABASE_NAME=$TEMPLATE "$BIN/pytest" -q --create-db --reuse-db -p no:cacheprovider \
  tests/capacity/test_constraints.py >/dev/null
export TEST_DATABASE_TEMPLATE=$TEMPLATE
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}

started=$(date +%s)
"$BIN/mutmut" run --max-children "${MUTATION_CHILDREN:-2}" || true
echo "Mutation run took $(( ($(date +%s) - started) / 60 )) min."
"$BIN/python" scripts/mutation_report.py
