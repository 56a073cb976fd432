#!/usr/bin/env bash
# Long conformance profile: N random programs (default 10000) run on Trio and on asyncbis,
# compared event by event (tests/conformance, docs/conformance.md).
#
#   bash scripts/conformance.sh [N] [extra pytest args]
#
# Unlike the CI profile the seed is random (Hypothesis prints it, and the reproduction blob,
# on failure). The interpreter is $PYTHON, or the first .venv-test/*/bin/python that
# scripts/test.sh made, or python3; it needs asyncbis installed plus pytest, hypothesis, trio.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-10000}"
shift || true
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  py=$(ls -d .venv-test/*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
  py="${py:-python3}"
fi
echo "== conformance long profile: $n programs on $("$py" --version)"
start=$(date +%s)
CONFORMANCE_LONG=1 CONFORMANCE_EXAMPLES="$n" "$py" -m pytest -q -s -p no:cacheprovider \
  -o timeout=0 tests/conformance/test_conformance.py "$@"
echo "== done in $(( $(date +%s) - start )) s"
