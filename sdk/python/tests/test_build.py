"""The in-tree build backend (_build/nops_build.py) builds an installable wheel and an sdist with
the standard library only, so `pip install ./sdk/python` needs no network."""

from __future__ import annotations

import importlib.util
import os
import tarfile
import tempfile
import unittest
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def backend():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("nops_build", os.path.join(ROOT, "_build", "nops_build.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Build(unittest.TestCase):
    def test_wheel(self) -> None:
        b = backend()
        self.assertEqual(b.get_requires_for_build_wheel(), [])
        with tempfile.TemporaryDirectory() as d:
            name = b.build_wheel(d)
            self.assertEqual(name, "nops_sdk-0.1.0-py3-none-any.whl")
            with zipfile.ZipFile(os.path.join(d, name)) as z:
                names = set(z.namelist())
                for mod in ("__init__", "agent", "client", "retry", "schema", "server", "signing"):
                    self.assertIn("nops_sdk/%s.py" % mod, names)
                self.assertIn("nops_sdk/py.typed", names)
                self.assertFalse(any("__pycache__" in n or n.startswith("tests/") for n in names), names)
                meta = z.read("nops_sdk-0.1.0.dist-info/METADATA").decode()
                self.assertIn("Name: nops-sdk\nVersion: 0.1.0\n", meta)
                self.assertIn("Description-Content-Type: text/markdown\n\n# nops-sdk (Python)", meta)
                record = z.read("nops_sdk-0.1.0.dist-info/RECORD").decode().splitlines()
                self.assertEqual(len(record), len(names))
                self.assertTrue(all(line.endswith(",,") or ",sha256=" in line for line in record))

    def test_sdist(self) -> None:
        b = backend()
        with tempfile.TemporaryDirectory() as d:
            name = b.build_sdist(d)
            with tarfile.open(os.path.join(d, name)) as t:
                names = set(t.getnames())
        self.assertIn("nops_sdk-0.1.0/pyproject.toml", names)
        self.assertIn("nops_sdk-0.1.0/_build/nops_build.py", names)
        self.assertIn("nops_sdk-0.1.0/nops_sdk/client.py", names)
        self.assertIn("nops_sdk-0.1.0/PKG-INFO", names)
        self.assertIn("nops_sdk-0.1.0/README.md", names)


if __name__ == "__main__":
    unittest.main()
