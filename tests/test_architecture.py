"""Layering: the pure packages load no I/O modules, and node/ and simulations/ stay apart."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("asyncio", "zmq", "zeroconf", "socket")

# The probe watches every import of a forbidden module and records who asked for
# it (the chain of importing modules, innermost first). One case is tolerated:
# pydantic discovers its plugins through importlib.metadata, which parses package
# metadata with the stdlib ``email`` package, and ``email.utils`` imports
# ``socket`` (for ``getfqdn``) without ever opening one. Anything else -- in
# particular any import made by protocols/ or mesh/ themselves -- fails.
_PROBE = """
import importlib, json, pkgutil, sys
FORBIDDEN = {forbidden!r}
chains = {{}}
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN and name not in chains:
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                mod = frame.f_globals.get("__name__", "?")
                if not mod.startswith("importlib._bootstrap") and (not chain or chain[-1] != mod):
                    chain.append(mod)
                frame = frame.f_back
            chains[name] = chain
        return None
sys.meta_path.insert(0, Watch())
loaded = []
for name in ("protocols", "mesh"):
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(info.name)
        loaded.append(info.name)
present = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
print(json.dumps({{"modules": loaded, "present": present, "chains": chains}}))
"""


def _tolerated(name: str, chain: list[str]) -> bool:
    return name == "socket" and chain[:1] == ["email.utils"] and "importlib.metadata" in chain


def test_pure_packages_load_no_io_modules() -> None:
    probe = _PROBE.format(forbidden=set(FORBIDDEN))
    r = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "protocols.envelope" in out["modules"] and "protocols.kinds" in out["modules"]
    assert set(out["present"]) <= set(out["chains"]), "a forbidden module loaded unseen"
    bad = {name: chain for name, chain in out["chains"].items() if not _tolerated(name, chain)}
    assert bad == {}, f"protocols/mesh loaded I/O modules (importer chains): {bad}"


def test_the_probe_catches_a_direct_import() -> None:
    probe = _PROBE.format(forbidden=set(FORBIDDEN)).replace(
        "loaded = []", "import asyncio\nloaded = []"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    chains = json.loads(r.stdout)["chains"]
    assert chains["asyncio"][0] == "__main__" and not _tolerated("asyncio", chains["asyncio"])
    assert not _tolerated("socket", ["protocols.x", "importlib.metadata"])


def _module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Imports that run when the module is imported (everything outside function bodies)."""
    found: list[tuple[int, str]] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        stack.extend(ast.iter_child_nodes(node))
    return found


@pytest.mark.parametrize(("package", "banned"), [("node", "simulations"), ("simulations", "node")])
def test_shells_do_not_import_each_other(package: str, banned: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module in _module_level_imports(tree):
            if module == banned or module.startswith(banned + "."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offenders == []


def test_the_import_scanner_sees_through_if_and_try_but_not_functions() -> None:
    tree = ast.parse(
        "import a\nif x:\n    import b\ntry:\n    from c import d\nexcept E:\n    pass\n"
        "def f():\n    import e\nclass K:\n    import g\n"
    )
    assert sorted(m for _, m in _module_level_imports(tree)) == ["a", "b", "c", "g"]


def test_pure_packages_do_not_import_the_shells() -> None:
    offenders = []
    for package in ("protocols", "mesh"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in ("node", "simulations") or (package == "protocols" and top == "mesh"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == []
