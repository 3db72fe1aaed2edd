"""A minimal PEP 517 build backend for nops-sdk, standard library only.

It builds a pure-Python wheel of the ``nops_sdk`` package and an sdist, reading the name and the
version from pyproject.toml (tomllib on Python 3.11+, a line scan before). pip needs nothing else
to install the SDK, so ``pip install ./sdk/python`` works without network access.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from typing import Dict, List, Optional, Tuple

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE = "nops_sdk"


def _project() -> Tuple[str, str, str, str]:
    path = os.path.join(_ROOT, "pyproject.toml")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        import tomllib

        proj = tomllib.loads(raw.decode("utf-8"))["project"]
        return proj["name"], proj["version"], proj.get("description", ""), proj.get("requires-python", "")
    except ImportError:  # Python < 3.11
        text = raw.decode("utf-8")

        def field(name: str) -> str:
            m = re.search(r'^%s\s*=\s*"([^"]*)"' % re.escape(name), text, re.M)
            return m.group(1) if m else ""

        return field("name"), field("version"), field("description"), field("requires-python")


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata() -> str:
    name, version, summary, requires = _project()
    lines = ["Metadata-Version: 2.1", "Name: " + name, "Version: " + version, "Summary: " + summary]
    if requires:
        lines.append("Requires-Python: " + requires)
    readme = os.path.join(_ROOT, "README.md")
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            return "\n".join(lines) + "\n\n" + f.read()
    return "\n".join(lines) + "\n"


def _package_files() -> List[str]:
    out = []
    base = os.path.join(_ROOT, _PACKAGE)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in sorted(filenames):
            if fn.endswith(".py") or fn == "py.typed":
                out.append(os.path.relpath(os.path.join(dirpath, fn), _ROOT))
    return sorted(out)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "sha256=" + digest


def get_requires_for_build_wheel(config_settings: Optional[Dict[str, str]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, str]] = None) -> List[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: Optional[Dict[str, str]] = None,
                metadata_directory: Optional[str] = None) -> str:
    name, version, _, _ = _project()
    dist = _dist_name(name)
    info = "%s-%s.dist-info" % (dist, version)
    filename = "%s-%s-py3-none-any.whl" % (dist, version)
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
        def add(arcname: str, data: bytes) -> None:
            z.writestr(arcname, data)
            records.append("%s,%s,%d" % (arcname, _record_hash(data), len(data)))

        for rel in _package_files():
            with open(os.path.join(_ROOT, rel), "rb") as f:
                add(rel.replace(os.sep, "/"), f.read())
        add(info + "/METADATA", _metadata().encode())
        add(info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: nops_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        add(info + "/top_level.txt", (_PACKAGE + "\n").encode())
        records.append(info + "/RECORD,,")
        z.writestr(info + "/RECORD", "\n".join(records) + "\n")
    return filename


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, str]] = None) -> str:
    name, version, _, _ = _project()
    base = "%s-%s" % (_dist_name(name), version)
    filename = base + ".tar.gz"
    files = _package_files() + ["pyproject.toml", "README.md", os.path.join("_build", "nops_build.py")]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        for rel in files:
            tar.add(os.path.join(_ROOT, rel), arcname=base + "/" + rel.replace(os.sep, "/"))
        pkg_info = _metadata().encode()
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(pkg_info)
        tar.addfile(ti, io.BytesIO(pkg_info))
    return filename
