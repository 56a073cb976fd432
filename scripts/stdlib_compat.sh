#!/usr/bin/env bash
# Runs CPython's own test_asyncio on each Python three ways: stock; under patch_asyncio() with
# every asyncbis switch off (must equal stock); with the defaults; and "harness" = defaults with
# the two switches test harnesses trip over off (no-loop-policies, no-task-factory), which
# shows the deeper breakage. Failures of the last two are attributed to switches:
# refusals name their switch; every other failing test is rerun with one switch off at a time.
#
#   bash scripts/stdlib_compat.sh [OUTDIR]          (default OUTDIR: .stdlib-compat)
#
# Interpreters: ASYNCBIS_PYTHONS (space-separated) or the venvs scripts/test.sh made
# (.venv-test/<ver>/bin/python, 3.11-3.15); each must have asyncbis installed. Debian's 3.14/3.15
# (scripts/pythons.sh) keep test_asyncio in a package of its own: `pythons.sh --testsuite`. One Python at a time,
# one test module per process (per-module limit 15 min, per-test 60 s).
# Writes OUTDIR/{stock,off,default,harness,attribution-default,attribution-harness}-<ver>.json
# and OUTDIR/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.stdlib-compat}
mkdir -p "$out"
pythons=()
if [[ -n "${ASYNCBIS_PYTHONS:-}" ]]; then
  read -r -a pythons <<<"$ASYNCBIS_PYTHONS"
else
  for v in 3.11 3.12 3.13 3.14 3.15; do
    [[ -x ".venv-test/$v/bin/python" ]] && pythons+=(".venv-test/$v/bin/python")
  done
fi
[[ ${#pythons[@]} -gt 0 ]] || { echo "no interpreters: run scripts/test.sh first or set ASYNCBIS_PYTHONS" >&2; exit 2; }
for py in "${pythons[@]}"; do
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  "$py" -c 'import asyncbis' || { echo "asyncbis is not installed for $py" >&2; exit 2; }
  "$py" -c 'import test.test_asyncio' 2>/dev/null || {
    echo "$py has no test.test_asyncio (for 3.14/3.15: bash scripts/pythons.sh --testsuite)" >&2
    exit 2
  }
  for mode in stock off default harness; do
    echo "== Python $ver: $mode"
    timeout 7200 "$py" scripts/stdlib_compat.py --mode "$mode" --out "$out/$mode-$ver.json"
  done
  echo "== Python $ver: attributing failures to switches"
  for mode in default harness; do
    timeout 7200 "$py" scripts/stdlib_compat.py --attribute "$out/$mode-$ver.json" \
      --out "$out/attribution-$mode-$ver.json"
  done
done
"${pythons[0]}" scripts/stdlib_compat.py --report "$out" | tee "$out/report.md"
