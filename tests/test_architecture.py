"""The house keeps its shape: layers import downwards, one owner per dependency, small modules.

The layer contract itself is import-linter's (``[tool.importlinter]`` in pyproject.toml); these
tests run it, prove that it would catch an upward import and a cycle, and check what it cannot
express: which module may import which third-party package, module size, and that
docs/architecture.md describes the tree that exists.
"""

from __future__ import annotations

import ast
import functools
import gc
import importlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "meshlib"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# Third-party package -> the meshlib modules (dotted prefixes) allowed to import it.
OWNERS = {
    "tenacity": ("meshlib.retry",),
    "opentelemetry": ("meshlib.otel",),
    "consul": ("meshlib.consul",),
    "rich": ("meshlib.demo",),
    # The test upstreams (a side package, never on the request path) parse requests with it.
    "httptools": ("meshlib.engine", "meshlib.upstream"),
    # meshlib.pipeline.mocking reads it from sys.modules only once httpx has imported it, so
    # nothing imports it (and `import meshlib` does not pay for it).
    "httpcore": (),
    # Serving Connect with uvicorn (optional: the `connect` extra), and decoding a PEM client
    # certificate (the ASGI TLS extension's form); FakeConsul's CA issues certificates with it.
    "uvicorn": ("meshlib.connect.uvicorn",),
    "cryptography": ("meshlib.connect.middleware", "meshlib.testing.fake_consul"),
    "aiohttp": (),
    "aiobreaker": (),
    "requests": (),
}
MAX_LINES = 400


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


@functools.cache
def _parse(path: Path) -> ast.Module:
    """``ast.parse`` with the cyclic collector held off: CPython 3.11 raises "AST constructor
    recursion depth mismatch" when a finalizer (left over by an earlier test) runs mid-build."""
    gc.disable()
    try:
        return ast.parse(path.read_text())
    finally:
        gc.enable()


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file, function-level ones included."""
    found = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _lint(cwd: Path, src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_layer_contract_is_kept() -> None:
    result = _lint(ROOT, SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert result.stdout.count("KEPT") == 3


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """A copy of the package and the contract, to break on purpose."""
    shutil.copytree(PKG, tmp_path / "src" / "meshlib", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_contract_fails_on_an_upward_import(tree_copy: Path) -> None:
    errors = tree_copy / "src" / "meshlib" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport meshlib.client  # L0 -> L4\n")
    result = _lint(tree_copy, tree_copy / "src")
    assert result.returncode != 0
    report = " ".join(result.stdout.split())
    assert "L1, L0) BROKEN" in report
    assert "meshlib.errors -> meshlib.client" in report


def test_contract_fails_on_a_cycle_inside_a_package(tree_copy: Path) -> None:
    call = tree_copy / "src" / "meshlib" / "pipeline" / "call.py"
    call.write_text(call.read_text() + "\nimport meshlib.pipeline.drivers  # drivers -> call\n")
    result = _lint(tree_copy, tree_copy / "src")
    assert result.returncode != 0
    report = " ".join(result.stdout.split())
    assert "No import cycles between the modules or packages of any one package BROKEN" in report
    assert "L1, L0) KEPT" in report  # a cycle inside one layer is not a layering breach


@pytest.mark.parametrize("package", sorted(OWNERS))
def test_each_third_party_package_has_one_owner(package: str) -> None:
    importers = [mod for mod, path in _modules() if package in _third_party_imports(path)]
    allowed = OWNERS[package]
    stray = [m for m in importers if not any(m == o or m.startswith(o + ".") for o in allowed)]
    assert not stray, f"{package} is imported outside {allowed}: {stray}"
    if allowed:
        assert importers, f"nothing imports {package}: the owner table is stale"


def test_imported_packages_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = " ".join(project["dependencies"])
    for name in ("httpx", "httptools", "httpcore", "tenacity", "py-consul", "opentelemetry-api"):
        assert name in declared, f"{name} is imported by meshlib but not declared"


def test_no_module_is_over_400_lines() -> None:
    big = {
        mod: n for mod, path in _modules() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"split these modules (at most {MAX_LINES} lines each): {big}"


def test_every_module_says_its_concern() -> None:
    missing = [mod for mod, path in _modules() if not ast.get_docstring(_parse(path))]
    assert not missing, f"modules without a docstring: {missing}"


def test_architecture_doc_names_every_package() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    packages = sorted(
        p.relative_to(SRC).as_posix().replace("/", ".")
        for p in PKG.rglob("*")
        if p.is_dir() and (p / "__init__.py").exists() and p != PKG
    )
    top = sorted(
        f"meshlib.{p.stem}" for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")
    )
    missing = [name for name in packages + top if f"`{name}" not in doc]
    assert not missing, f"docs/architecture.md does not describe: {missing}"
    stale = [name for name in _named_in(doc) if not _resolves(name)]
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"


def _named_in(doc: str) -> set[str]:
    return set(re.findall(r"`(meshlib(?:\.[A-Za-z_][A-Za-z0-9_]*)+)", doc))


def _resolves(dotted: str) -> bool:
    """A module, or a module's attribute (``meshlib.telemetry.configure``)."""
    module, _, attr = dotted.rpartition(".")
    candidates = [(dotted, None), (module, attr)]
    for mod, name in candidates:
        try:
            found = importlib.import_module(mod)
        except ImportError:
            continue
        if name is None or hasattr(found, name):
            return True
    return False


def test_layers_in_the_contract_exist() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    names = [n.strip() for line in layers for n in line.split("|")]
    for name in names:
        assert (PKG / name).is_dir() or (PKG / f"{name}.py").exists(), name
    # Every package and module of the library is placed in a layer (the side packages aside).
    placed = set(names) | {"testing", "upstream", "__init__", "__main__", "py"}
    for path in PKG.iterdir():
        if path.name.startswith("_") or path.suffix not in ("", ".py") or path.name == "py.typed":
            continue
        assert path.stem in placed, f"{path.name} is in no layer of the contract"


def test_admin_after_a_bare_import_of_meshlib() -> None:
    code = "import meshlib; print(meshlib.admin.start_admin_from_config.__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "start_admin_from_config"
