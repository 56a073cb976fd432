"""Fetch one sdist from PyPI and unpack it: fetch_sdist.py NAME VERSION ARCHIVE_DIR UNPACK_DIR.

Uses PyPI's JSON API (checking the sha256) and falls back to `pip download`. Prints the
unpacked project root (the directory holding pyproject.toml / setup.py) on the last line.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile

name, version, archive_dir, unpack_dir = sys.argv[1:5]
os.makedirs(archive_dir, exist_ok=True)


def from_json_api():
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=120) as resp:
        data = json.load(resp)
    files = [f for f in data.get("releases", {}).get(version, []) if f.get("packagetype") == "sdist"]
    if not files:
        raise LookupError(f"PyPI lists no sdist for {name}=={version}")
    info = files[0]
    target = os.path.join(archive_dir, info["filename"])
    if not os.path.exists(target):
        with urllib.request.urlopen(info["url"], timeout=600) as resp:
            payload = resp.read()
        expected = info.get("digests", {}).get("sha256")
        if expected and hashlib.sha256(payload).hexdigest() != expected:
            raise ValueError(f"sha256 mismatch for {info['filename']}")
        with open(target + ".part", "wb") as out:
            out.write(payload)
        os.replace(target + ".part", target)
    return target


def from_pip():
    before = set(os.listdir(archive_dir))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         f"{name}=={version}", "-d", archive_dir],
        check=True, stdout=sys.stderr,
    )
    new = sorted(set(os.listdir(archive_dir)) - before) or sorted(os.listdir(archive_dir))
    return os.path.join(archive_dir, new[-1])


try:
    archive = from_json_api()
except Exception as err:  # the JSON API may be unavailable behind a mirror
    print(f"JSON API failed ({err}); trying pip download", file=sys.stderr)
    archive = from_pip()

staging = tempfile.mkdtemp(prefix="unpack-", dir=os.path.dirname(os.path.abspath(unpack_dir)) or ".")
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
if os.path.exists(unpack_dir):
    shutil.rmtree(unpack_dir)
shutil.move(root, unpack_dir)
shutil.rmtree(staging, ignore_errors=True)
print(unpack_dir)
