"""The layering the design promises: schemas, curation, training and demo import no dagster;
`dagster_project → assets → demo → curation, training → schemas`, never upwards."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["schemas", "curation", "training", "demo"])
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


def test_only_definitions_imports_asset_definitions() -> None:
    """One `Definitions`, built in one place: the rest of `dagster_project` may use the
    resources, never the asset modules themselves."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(?:from\s+assets(\.\w+)?\s+import|import\s+assets(\.\w+)?)", re.M)
    offenders = [
        f"{path.relative_to(root)}: {m.group(0).strip()}"
        for path in (root / "dagster_project").rglob("*.py")
        if path.name != "definitions.py"
        for m in pattern.finditer(path.read_text())
        if (m.group(1) or m.group(2)) != ".resources"
    ]
    assert offenders == []


def test_assets_never_import_dagster_project() -> None:
    """`dagster_project → assets → curation, training → schemas`: nothing reaches up."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    upward = {
        "assets": ("dagster_project",),
        "demo": ("dagster_project", "assets", "training"),
        "curation": ("dagster_project", "assets", "training", "demo"),
        "training": ("dagster_project", "assets", "curation", "demo"),
        "schemas": ("dagster_project", "assets", "curation", "training", "demo"),
    }
    offenders = []
    for package, forbidden in upward.items():
        pattern = re.compile(rf"^\s*(?:from|import)\s+({'|'.join(forbidden)})\b", re.M)
        for path in (root / package).rglob("*.py"):
            offenders += [
                f"{path.relative_to(root)}: {m.group(0).strip()}"
                for m in pattern.finditer(path.read_text())
            ]
    assert offenders == []


def test_production_reaches_the_demo_generator_in_one_place() -> None:
    """Only resolving `CATALOGUE_URI=demo` may import the demo generator."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(?:from|import)\s+demo\b", re.M)
    importers = [
        str(path.relative_to(root))
        for package in ("schemas", "curation", "training", "assets", "dagster_project")
        for path in (root / package).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert importers == ["assets/resources.py"]


def test_no_module_uses_private_dagster_apis() -> None:
    """`dagster._…` is Dagster's private namespace: it changes in patch releases, which is what
    pinned the project to one exact version. Nothing here may import or reach into it."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    private = re.compile(r"^\s*(?:from|import)\s+dagster\._|\b(?:dagster|dg)\._\w", re.M)
    skip = {".venv", ".git", "data", ".dagster_home", "test-artifacts"}
    offenders = [
        f"{path.relative_to(root)}: {match.group(0).strip()}"
        for path in root.rglob("*.py")
        if not skip & set(path.relative_to(root).parts)
        for match in private.finditer(path.read_text())
    ]
    assert offenders == []


def _imports_of(path: pathlib.Path, module: str, modules: set[str]) -> set[str]:
    """Our modules that `module` imports anywhere in its file, function bodies included (a
    function-level import hides a loop from the interpreter, not from a reader)."""
    import ast

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {ours(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.rsplit(".", node.level - 1)[0]
                base = ".".join(filter(None, [anchor, node.module]))
            found |= {ours(f"{base}.{alias.name}") for alias in node.names}
    return {name for name in found if name and name != module}


def test_no_import_loops() -> None:
    """No module imports (at the top or inside a function) a module that imports it back."""
    import graphlib

    root = pathlib.Path(__file__).resolve().parents[1]
    packages = ("schemas", "curation", "training", "demo", "assets", "dagster_project", "bench")
    paths = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for package in packages
        for path in (root / package).rglob("*.py")
    }
    graph = {name: _imports_of(path, name, set(paths)) for name, path in paths.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as loop:
        raise AssertionError(f"import loop: {' -> '.join(loop.args[1])}") from None
