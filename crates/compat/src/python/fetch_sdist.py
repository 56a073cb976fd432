"""Fetch one sdist from PyPI and unpack it: fetch_sdist.py NAME VERSION ARCHIVE_DIR UNPACK_DIR.

Uses PyPI's JSON API (checking the sha256) and falls back to `pip download`. Prints the
unpacked project root (the directory holding pyproject.toml / setup.py) on the last line.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile

name, version, archive_dir, unpack_dir = sys.argv[1:5]
os.makedirs(archive_dir, exist_ok=True)


def normalise(text):
    return re.sub(r"[-_.]+", "-", text).lower()


def from_json_api():
    api = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(api, timeout=120) as resp:
        data = json.load(resp)
    releases = data.get("releases", {}).get(version, [])
    files = [f for f in releases if f.get("packagetype") == "sdist"]
    if not files:
        raise LookupError(f"PyPI lists no sdist for {name}=={version}")
    info = files[0]
    target = os.path.join(archive_dir, info["filename"])
    if not os.path.exists(target):
        # Mirrors may answer with URLs relative to the API endpoint.
        url = urllib.parse.urljoin(api, info["url"])
        with urllib.request.urlopen(url, timeout=600) as resp:
            payload = resp.read()
        expected = info.get("digests", {}).get("sha256")
        if expected and hashlib.sha256(payload).hexdigest() != expected:
            raise ValueError(f"sha256 mismatch for {info['filename']}")
        with open(target + ".part", "wb") as out:
            out.write(payload)
        os.replace(target + ".part", target)
    return target


def from_pip():
    # A private directory: other projects may be downloading into archive_dir concurrently.
    private = tempfile.mkdtemp(prefix="pip-", dir=archive_dir)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{name}=={version}",
            "-d",
            private,
        ],
        check=True,
        stdout=sys.stderr,
    )
    (filename,) = os.listdir(private)
    target = os.path.join(archive_dir, filename)
    os.replace(os.path.join(private, filename), target)
    os.rmdir(private)
    return target


try:
    archive = from_json_api()
except Exception as err:  # the JSON API may be unavailable behind a mirror
    print(f"JSON API failed ({err}); trying pip download", file=sys.stderr)
    archive = from_pip()

staging = tempfile.mkdtemp(
    prefix="unpack-", dir=os.path.dirname(os.path.abspath(unpack_dir)) or "."
)
if archive.endswith(".zip"):
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)
else:
    with tarfile.open(archive) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(staging, filter="data")
        else:
            tf.extractall(staging)
entries = os.listdir(staging)
root = os.path.join(staging, entries[0]) if len(entries) == 1 else staging
pkg_info = os.path.join(root, "PKG-INFO")
if os.path.exists(pkg_info):
    with open(pkg_info, encoding="utf-8", errors="replace") as fh:
        declared = next(
            (line.split(":", 1)[1].strip() for line in fh if line.startswith("Name:")), name
        )
    if normalise(declared) != normalise(name):
        sys.exit(f"{os.path.basename(archive)} is {declared}, not {name}")
if os.path.exists(unpack_dir):
    shutil.rmtree(unpack_dir)
shutil.move(root, unpack_dir)
shutil.rmtree(staging, ignore_errors=True)
print(unpack_dir)
