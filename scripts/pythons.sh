#!/usr/bin/env bash
# Installs CPython 3.14 and 3.15 from Debian sid's binary packages into a cache directory and
# prints the interpreters' paths, one a line (everything else goes to stderr).
#
#   bash scripts/pythons.sh [--testsuite] [VERSION...]     # default versions: 3.14 3.15
#
# Why this way: the machines have pyenv's 3.11-3.13 only, no CPython source tarball can be
# downloaded, and `apt-get source` is refused; Debian's registry does serve sid's *binary*
# packages. Those need glibc 2.38+ (this machine: Debian 12, glibc 2.36), so sid's libc and the
# shared libraries the interpreter and its extension modules load are unpacked beside it, and the
# interpreter binary is pointed at that loader and library directory with patchelf (DT_RPATH,
# not DT_RUNPATH, so that lib-dynload's modules find sid's libssl/libffi/... too).
#
# Nothing outside the cache directory is touched except that patchelf is installed from the
# system's own apt sources if it is missing. sid's package lists and downloads live in a
# private apt state directory (the system's apt configuration is left alone).
#
# Layout of the cache ($ASYNCBIS_PYTHONS_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/asyncbis/pythons):
#   apt/    private sources list, package lists and apt cache for sid
#   debs/   the downloaded .deb files
#   root/   the unpacked file system: root/usr/bin/python3.X is the interpreter
#
# Idempotent: a stamp records which packages (and versions) root/ was built from; a warm run
# only checks the stamp and that each interpreter starts (no network). ASYNCBIS_PYTHONS_REFRESH=1
# re-reads sid's lists and rebuilds root/ when sid has moved on.
#
# --testsuite also installs libpython3.X-testsuite (CPython's Lib/test: test_asyncio).
#
# What it provides per version: the interpreter, the whole standard library (ssl, sqlite3,
# ctypes, lzma, bz2, zlib, readline, curses, decimal, uuid), `-m venv` with pip (ensurepip uses
# Debian's pip wheel, unpacked under root/usr/share/python-wheels), and the headers and
# sysconfig data that building extensions (maturin/PyO3) needs. Debian ships no free-threaded
# (python3.Xt / nogil) build in sid or experimental, so none is installed.
set -euo pipefail

testsuite=0
versions=()
for arg in "$@"; do
  case "$arg" in
    --testsuite) testsuite=1 ;;
    3.1[4-9]) versions+=("$arg") ;;
    -h | --help)
      sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2
      exit 0
      ;;
    *)
      echo "pythons.sh: unknown argument '$arg' (expected --testsuite or a version like 3.15)" >&2
      exit 2
      ;;
  esac
done
[[ ${#versions[@]} -gt 0 ]] || versions=(3.14 3.15)

cache="${ASYNCBIS_PYTHONS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/asyncbis/pythons}"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
root="$cache/root"
libdir="$root/usr/lib/x86_64-linux-gnu"

log() { echo "pythons.sh: $*" >&2; }

if [[ "$(uname -m)" != x86_64 ]]; then
  log "only x86_64 is supported (Debian's amd64 packages); this machine is $(uname -m)"
  exit 2
fi

# One run at a time per cache (test.sh and the suites may be started side by side).
exec 9>"$cache/.lock"
flock 9

# Shared libraries that sid's interpreter and lib-dynload modules load (their Depends), sid's
# libc itself, and Debian's pip wheel for ensurepip.
common=(libc6 libgcc-s1 libssl3t64 libexpat1 libzstd1 zlib1g libffi8 libsqlite3-0 libbz2-1.0
  liblzma5 libuuid1 libncursesw6 libtinfo6 libreadline8t64 python3-pip-whl)
packages=("${common[@]}")
for v in "${versions[@]}"; do
  packages+=("python$v-minimal" "libpython$v-minimal" "libpython$v-stdlib" "python$v"
    "libpython$v" "python$v-venv" "python$v-dev" "libpython$v-dev")
  [[ $testsuite == 1 ]] && packages+=("libpython$v-testsuite")
done

# Prints the interpreters if root/ holds every requested package and each one starts.
ready() {
  [[ -f "$cache/stamp" ]] || return 1
  local p
  for p in "${packages[@]}"; do
    grep -q "^$p " "$cache/stamp" || return 1
  done
  for v in "${versions[@]}"; do
    "$root/usr/bin/python$v" -c 'import ssl, sqlite3, ctypes, venv' 2>/dev/null || return 1
  done
}

if [[ "${ASYNCBIS_PYTHONS_REFRESH:-0}" != 1 ]] && ready; then
  for v in "${versions[@]}"; do echo "$root/usr/bin/python$v"; done
  exit 0
fi

# A stamp from an earlier run may name more packages than asked for now: keep them all, so
# that `pythons.sh 3.15` after `pythons.sh --testsuite` does not drop the test suites.
if [[ -f "$cache/stamp" ]]; then
  while read -r p _; do
    [[ " ${packages[*]} " == *" $p "* ]] || packages+=("$p")
  done <"$cache/stamp"
fi

if ! command -v patchelf >/dev/null 2>&1; then
  log "installing patchelf (Debian package, system apt)"
  if [[ $(id -u) != 0 ]]; then
    log "patchelf is missing and this is not root: install it (apt-get install patchelf)"
    exit 2
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >&2; }
fi

# Private apt for sid: own sources list, no sources.list.d, own state, cache and status file.
apt="$cache/apt"
mkdir -p "$apt/sources.list.d" "$apt/preferences.d" "$apt/lists/partial" \
  "$apt/cache/archives/partial"
touch "$apt/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] ${ASYNCBIS_DEBIAN_MIRROR:-http://deb.debian.org/debian} sid main" \
  >"$apt/sources.list"
aptopts=(
  -o "Dir::Etc::sourcelist=$apt/sources.list"
  -o "Dir::Etc::sourceparts=$apt/sources.list.d"
  -o "Dir::Etc::preferencesparts=$apt/preferences.d"
  -o "Dir::State=$apt"
  -o "Dir::State::lists=$apt/lists"
  -o "Dir::State::status=$apt/status"
  -o "Dir::Cache=$apt/cache"
  -o "APT::Architecture=amd64"
  -o "APT::Sandbox::User=root"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::Languages=none"
)
if [[ $(id -u) != 0 ]]; then
  aptopts+=(-o "Debug::NoLocking=1")
fi

start=$SECONDS
log "reading Debian sid's package lists into $apt"
apt-get "${aptopts[@]}" -q update >&2

mkdir -p "$cache/debs"
rm -f "$cache/debs"/*.deb
log "downloading ${#packages[@]} packages"
(cd "$cache/debs" && apt-get "${aptopts[@]}" -q download "${packages[@]}" >&2)

# Unpack into a fresh directory and swap it in, so that an interrupted run leaves either the
# old root/ or none (never a half-patched one).
rm -rf "$root.new" "$root.old"
mkdir -p "$root.new"
for deb in "$cache/debs"/*.deb; do
  dpkg-deb -x "$deb" "$root.new"
done
new_lib="$root.new/usr/lib/x86_64-linux-gnu"
for bin in "$root.new"/usr/bin/python3.*; do
  v=${bin##*/python}
  [[ $v =~ ^3\.[0-9]+$ ]] || continue # python3.X-config and the like
  # The paths given to patchelf are the final ones (root/, not root.new/).
  patchelf --set-interpreter "$libdir/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$libdir" \
    "$bin"
  # Debian's ensurepip takes pip's wheel from WHEEL_PKG_DIR (/usr/share/python-wheels/):
  # point it at the unpacked copy so that `python3.X -m venv` installs pip.
  sed -i "s|'WHEEL_PKG_DIR': '/usr/share/python-wheels/'|'WHEEL_PKG_DIR': '$root/usr/share/python-wheels/'|" \
    "$root.new/usr/lib/python$v"/_sysconfigdata_*.py
done
[[ -e "$new_lib/ld-linux-x86-64.so.2" ]] || { log "sid's libc6 did not unpack"; exit 1; }
[[ -d "$root" ]] && mv "$root" "$root.old"
mv "$root.new" "$root"
rm -rf "$root.old"

# Check that everything the test suites use imports, and record what was installed.
for v in "${versions[@]}"; do
  "$root/usr/bin/python$v" -c '
import asyncio, bz2, ctypes, _ctypes, curses, decimal, hashlib, lzma, readline, sqlite3, ssl
import sysconfig, uuid, venv, zlib, ensurepip, os
inc = sysconfig.get_paths()["include"]
assert os.path.exists(os.path.join(inc, "Python.h")), "no Python.h in " + inc
' || {
    log "python$v was unpacked but does not work; see the error above"
    exit 1
  }
done
for deb in "$cache/debs"/*.deb; do
  echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
done | sort >"$cache/stamp"
rm -f "$cache/debs"/*.deb
log "installed in $((SECONDS - start)) s:"
for v in "${versions[@]}"; do
  log "  $("$root/usr/bin/python$v" -VV)"
done
for v in "${versions[@]}"; do echo "$root/usr/bin/python$v"; done
