#!/usr/bin/env bash
# Builds asyncbis and runs its tests on every supported Python found here.
#
# Pythons: pyenv's 3.11/3.12/3.13 when pyenv is installed, otherwise `python3` (any >= 3.11),
# plus 3.14 and 3.15 from Debian sid's packages (scripts/pythons.sh installs them into
# ~/.cache/asyncbis/pythons: about 20 s the first time, 1 s after); or exactly those given in
# ASYNCBIS_PYTHONS (space-separated interpreter paths). ASYNCBIS_SID_PYTHONS=0 leaves out 3.14/3.15.
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
if [[ -z "${ASYNCBIS_PYTHONS:-}" && "${ASYNCBIS_SID_PYTHONS:-1}" != 0 ]]; then
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    mapfile -t sid < <(bash scripts/pythons.sh)
    [[ ${#sid[@]} -gt 0 ]] || { echo "scripts/pythons.sh installed no Python" >&2; exit 1; }
    pythons+=("${sid[@]}")
  else
    echo "not a Debian-like machine: testing without Python 3.14/3.15 (scripts/pythons.sh)" >&2
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "asyncbis needs a Rust toolchain (cargo): https://rustup.rs" >&2
  exit 2
fi

echo "== cargo test (pure-Rust crates)"
cargo test -q -p asyncbis-scopes -p asyncbis-compat

# The study tool's end-to-end tests (tests/compat) exercise the Rust tool, not the runtime on a
# given Python, and each builds and runs whole fixture suites: they run on one Python only, the
# study's pinned 3.12 when it is among the Pythons (else the first). ASYNCBIS_COMPAT_TESTS=all
# runs them on every Python.
compat_ver=""
for py in "${pythons[@]}"; do
  v=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ -z "$compat_ver" || "$v" == 3.12 ]] && compat_ver=$v
done

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
  if ! "$venv/bin/python" -m pip install -q --group test --only-binary uvloop,rloop; then
    # uvloop and rloop are optional (their tests skip): a Python they have no wheel for yet
    # gets the rest of the group.
    echo "Python $ver: installing the test group without uvloop/rloop" >&2
    "$venv/bin/python" -c 'import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["dependency-groups"]["test"]
print("\n".join(d for d in deps if re.split("[<>=!~ ]", d)[0] not in ("uvloop", "rloop")))' |
      xargs "$venv/bin/python" -m pip install -q
  fi
  VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop -q --release
  only_once=()
  if [[ "${ASYNCBIS_COMPAT_TESTS:-one}" != all && "$ver" != "$compat_ver" ]]; then
    echo "Python $ver: tests/compat runs on Python $compat_ver only (ASYNCBIS_COMPAT_TESTS=all: here too)"
    only_once=(--ignore=tests/compat)
  fi
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${only_once[@]}" tests "$@" || status=1
done
exit $status
