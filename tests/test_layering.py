"""The layering the design promises: schemas, curation and training import no dagster."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["schemas", "curation", "training"])
def test_package_imports_without_dagster(package: str) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module('{package}')\n"
        "for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('dagster')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_only_definitions_imports_assets() -> None:
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = [
        str(path.relative_to(root))
        for folder in ("schemas", "curation", "training", "dagster_project")
        for path in (root / folder).rglob("*.py")
        if path.name != "definitions.py"
        and ("from assets" in path.read_text() or "import assets" in path.read_text())
    ]
    assert offenders == []


def test_assets_import_only_resources_from_dagster_project() -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(?:from|import)\s+dagster_project(\.\w+)?", re.M)
    for path in (root / "assets").rglob("*.py"):
        for match in pattern.finditer(path.read_text()):
            assert match.group(1) == ".resources", f"{path}: {match.group(0)}"
