#!/usr/bin/env bash
# Long profile of the runtime fuzzer (tests/fuzz, docs/conformance.md): random API-use
# programs checked for hangs, crashes, lost exceptions and leaked tasks or scope nodes.
#
#   bash scripts/fuzz.sh [N] [extra pytest args]
#
# N programs (default 20000), random seed (Hypothesis prints the reproduction blob on a
# failure), stopped after ASYNCBIS_FUZZ_MINUTES (default 20) with SIGINT; the verdict counts
# are printed either way. The interpreter is $PYTHON, or the first .venv-test/*/bin/python that
# scripts/test.sh made, or python3; it needs asyncbis installed plus pytest and hypothesis.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-20000}"
shift || true
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  py=$(ls -d .venv-test/*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
  py="${py:-python3}"
fi
minutes="${ASYNCBIS_FUZZ_MINUTES:-20}"
echo "== runtime fuzz long profile: up to $n programs or $minutes min on $("$py" --version)"
start=$(date +%s)
status=0
ASYNCBIS_FUZZ_PROFILE=long ASYNCBIS_FUZZ_EXAMPLES="$n" timeout -s INT "${minutes}m" \
  "$py" -m pytest -q -s -p no:cacheprovider -o timeout=0 \
  tests/fuzz/test_runtime_fuzz.py "$@" || status=$?
echo "== done in $(( $(date +%s) - start )) s (exit $status; 124 or 2: stopped at the time budget)"
exit $status
