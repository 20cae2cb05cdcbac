"""transformers' own common tests at the installed transformers version, taken from its PyPI sdist at test time.

The sdist ships `tests/test_modeling_common.py` (`ModelTesterMixin`) and `tests/test_configuration_common.py`
(`ConfigTester`), not the modules they import relatively: `tests/generation/test_utils.py`
(`GenerationTesterMixin`), `tests/exporters/test_export.py` (`ExportTesterMixin`) and
`tests/utils/test_configuration_utils.py` (`config_common_kwargs`). Those are registered here as empty
stand-ins (see `MISSING`), so the mixin's own tests run and the generation / export tests it would inherit
do not: bl-model's generation tests are `test_generation.py`. The sdist is downloaded once into the test-asset
cache (`$BL_TEST_ASSETS`, default ~/.cache/bl-test-assets), its sha256 checked against PyPI's digest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import tarfile
import tempfile
import types
import urllib.parse
import urllib.request
from pathlib import Path

import transformers

PACKAGE = "transformers_common_tests"
MEMBERS = ("test_modeling_common.py", "test_configuration_common.py")


class GenerationTesterMixin:
    """Stand-in for tests/generation/test_utils.py, which the sdist does not ship."""


class ExportTesterMixin:
    """Stand-in for tests/exporters/test_export.py, which the sdist does not ship."""


MISSING = {
    "generation.test_utils": {"GenerationTesterMixin": GenerationTesterMixin},
    "exporters.test_export": {"ExportTesterMixin": ExportTesterMixin},
    # read only by `ConfigTester.check_config_arguments_init`, which returns early for composite configs
    "utils.test_configuration_utils": {"config_common_kwargs": {}},
}


def _assets_dir() -> Path:
    return Path(os.environ.get("BL_TEST_ASSETS") or Path.home() / ".cache" / "bl-test-assets")


def fetch_tests(version: str = transformers.__version__) -> Path:
    """The folder holding `MEMBERS` of the transformers `version` sdist (downloaded and extracted once)."""
    target = _assets_dir() / f"transformers-{version}-sdist" / "tests"
    if all((target / m).is_file() for m in (*MEMBERS, "__init__.py")):
        return target
    index_url = "https://pypi.org/pypi/transformers/json"
    with urllib.request.urlopen(index_url, timeout=60) as resp:
        files = json.load(resp)["releases"].get(version, [])
    sdists = [f for f in files if f["packagetype"] == "sdist"]
    if not sdists:
        raise RuntimeError(f"PyPI lists no sdist for transformers=={version}")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive, digest = Path(tmp) / "sdist.tar.gz", hashlib.sha256()
        url = urllib.parse.urljoin(index_url, sdists[0]["url"])
        with urllib.request.urlopen(url, timeout=600) as resp, archive.open("wb") as out:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sdists[0]["digests"]["sha256"]:
            raise RuntimeError(f"sha256 mismatch for {sdists[0]['filename']}")
        with tarfile.open(archive) as tar:
            for member in MEMBERS:
                source = tar.extractfile(f"transformers-{version}/tests/{member}")
                (Path(tmp) / member).write_bytes(source.read())
                os.replace(Path(tmp) / member, target / member)  # atomic: never half a file
    (target / "__init__.py").touch()  # `test_configuration_common` imports its own folder as a package
    return target


def _module(name: str, path: Path | None = None, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    if path is not None:
        module.__path__ = [str(path)]
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def import_common_tests() -> tuple[types.ModuleType, types.ModuleType]:
    """(test_modeling_common, test_configuration_common) of the installed transformers version."""
    if PACKAGE not in sys.modules:
        folder = fetch_tests()
        _module(PACKAGE, folder)
        for dotted, attributes in MISSING.items():
            package, _ = dotted.split(".")
            if f"{PACKAGE}.{package}" not in sys.modules:
                _module(f"{PACKAGE}.{package}", folder / package)
            _module(f"{PACKAGE}.{dotted}", **attributes)
    return (
        importlib.import_module(f"{PACKAGE}.test_modeling_common"),
        importlib.import_module(f"{PACKAGE}.test_configuration_common"),
    )
