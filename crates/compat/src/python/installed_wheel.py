"""Pack the asyncbis this interpreter imports into a wheel: installed_wheel.py OUT_DIR.

Run by asyncbis-compat with the user's interpreter, so the study tests exactly the asyncbis the
user has (no build). The wheel holds the files of the imported `asyncbis` package (for an
editable install, the source tree's package directory with its built extension), the
distribution's other top-level files (the `asyncbis-autopatch.pth` activation hook) and its
metadata (METADATA, WHEEL, entry_points.txt: the pytest plugin), with a fresh RECORD.
The archive is reproducible (sorted names, fixed timestamps), so an unchanged install packs to
the same bytes and the study's cached asyncbis runs stay valid.

Prints `VERSION<TAB>PACKAGE_DIR<TAB>editable|installed` and then the wheel's path; exits 3 with a
message when asyncbis is not installed.
"""

import base64
import hashlib
import importlib.machinery
import importlib.metadata as md
import importlib.util
import json
import os
import sys
import sysconfig
import zipfile

out_dir = sys.argv[1]

try:
    dist = md.distribution("asyncbis")
except md.PackageNotFoundError:
    print(f"asyncbis is not installed for {sys.executable}", file=sys.stderr)
    sys.exit(3)
spec = importlib.util.find_spec("asyncbis")
if spec is None or not spec.submodule_search_locations:
    print(
        f"the asyncbis distribution is installed for {sys.executable}, but `import asyncbis`"
        " finds no package",
        file=sys.stderr,
    )
    sys.exit(3)
package_dir = os.path.realpath(list(spec.submodule_search_locations)[0])

version = dist.version
meta_dir = None
top_level = {}
editable = False
direct_url = dist.read_text("direct_url.json")
if direct_url:
    editable = bool(json.loads(direct_url).get("dir_info", {}).get("editable"))
for f in dist.files or []:
    parts = f.parts
    if not parts or parts[0] in ("..", "__pycache__"):
        continue
    if parts[0].endswith(".dist-info"):
        meta_dir = meta_dir or str(f.locate().parent)
        continue
    if len(parts) == 1 and parts[0].endswith(".pth"):
        path = str(f.locate())
        with open(path, "rb") as fh:
            data = fh.read()
        # An editable install's path hook (lines naming directories) is not part of the wheel.
        if editable and not data.lstrip().startswith(b"import"):
            continue
        top_level[parts[0]] = data
if meta_dir is None:
    print("the installed asyncbis has no .dist-info directory", file=sys.stderr)
    sys.exit(3)

wheel_meta = dist.read_text("WHEEL") or ""
tags = [
    line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")
]
if not tags:
    major, minor = sys.version_info[:2]
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    tags = [f"cp{major}{minor}-cp{major}{minor}-{platform}"]
tag = tags[0]

# A source tree used for editable installs on several Pythons holds one extension per version:
# keep this interpreter's.
own_suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
files = {}
for root, dirs, names in os.walk(package_dir):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in names:
        if name.endswith((".pyc", ".pyo")):
            continue
        if name.endswith((".so", ".pyd")) and not name.endswith(own_suffixes):
            continue
        path = os.path.join(root, name)
        rel = os.path.relpath(path, os.path.dirname(package_dir)).replace(os.sep, "/")
        with open(path, "rb") as fh:
            files[rel] = fh.read()
files.update(top_level)
dist_info = f"asyncbis-{version}.dist-info"
for name in sorted(os.listdir(meta_dir)):
    if name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
        continue
    path = os.path.join(meta_dir, name)
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            files[f"{dist_info}/{name}"] = fh.read()

record = []
for name in sorted(files):
    digest = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(files[name])}")
record.append(f"{dist_info}/RECORD,,")
files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()

os.makedirs(out_dir, exist_ok=True)
wheel = os.path.join(out_dir, f"asyncbis-{version.replace('-', '_')}-{tag}.whl")
with zipfile.ZipFile(wheel + ".part", "w", zipfile.ZIP_DEFLATED) as archive:
    for name in sorted(files):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, files[name])
os.replace(wheel + ".part", wheel)
print(f"{version}\t{package_dir}\t{'editable' if editable else 'installed'}")
print(wheel)
