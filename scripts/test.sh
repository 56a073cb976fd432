#!/usr/bin/env bash
# Builds asyncbis and runs its tests on every supported Python found here.
#
# Pythons: pyenv's 3.11/3.12/3.13 when pyenv is installed, otherwise `python3` (any >= 3.11),
# or exactly those given in ASYNCBIS_PYTHONS (space-separated interpreter paths).
# Each gets its own venv under .venv-test/<version>, rebuilt incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

pythons=()
if [[ -n "${ASYNCBIS_PYTHONS:-}" ]]; then
  read -r -a pythons <<<"$ASYNCBIS_PYTHONS"
elif command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for v in 3.11 3.12 3.13; do
    p=$(ls -d "$root"/versions/"$v".* 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n "$p" && -x "$p/bin/python" ]] && pythons+=("$p/bin/python")
  done
fi
if [[ ${#pythons[@]} -eq 0 ]]; then
  pythons=("$(command -v python3)")
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "asyncbis needs a Rust toolchain (cargo): https://rustup.rs" >&2
  exit 2
fi

echo "== cargo test (pure-Rust crates)"
cargo test -q -p asyncbis-scopes -p asyncbis-compat

status=0
for py in "${pythons[@]}"; do
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "skipping $py: asyncbis needs Python >= 3.11" >&2
    continue
  fi
  venv=".venv-test/$ver"
  echo "== Python $ver ($py)"
  [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
  # pip >= 25.1 reads the test dependency group from pyproject.toml.
  "$venv/bin/python" -m pip install -q --upgrade "pip>=25.1"
  "$venv/bin/python" -m pip install -q --group test
  VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop -q --release
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@" || status=1
done
exit $status
