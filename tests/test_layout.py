"""The layout's promises, checked on the source (AST), so they cannot rot silently:

* ``trproxy/proxy/`` (the engine) and ``trproxy/store/`` (recordings as data) name no
  protocol: they import no protocol package (only ``protocols.base`` and
  ``protocols.registry``) and hold no string naming one; protocols come in through
  dialects, and what differs between them is a dialect hook;
* ``trproxy/protocols/`` does no I/O: no sockets, event loops, clocks, processes or
  files (payloads too large for memory go through the ``BlobStore`` the proxy passes).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trproxy"
PROTOCOLS = sorted(p.name for p in (PACKAGE / "protocols").iterdir()
                   if p.is_dir() and (p / "__init__.py").exists())
NAMES = re.compile(r"\b(https?|h2c?|postgres(ql)?|redis|resp[23]?|kafka|websocket)\b", re.I)
NO_IO = {"socket", "asyncio", "time", "select", "selectors", "subprocess", "threading",
         "multiprocessing", "os", "shutil", "tempfile", "urllib.request"}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose may name protocols)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _imports(tree: ast.AST, module: Path) -> list[str]:
    """Absolute names of every import of ``module`` (relative ones resolved)."""
    parts = module.relative_to(PACKAGE.parent).with_suffix("").parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(parts[:len(parts) - node.level]) if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            out.append(name)
            out += [f"{name}.{a.name}" for a in node.names]
    return out


@pytest.mark.parametrize("module", _modules("proxy") + _modules("store"),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_engine_and_the_store_name_no_protocol(module: Path) -> None:
    tree = ast.parse(module.read_text(), str(module))
    dialects = [i for i in _imports(tree, module)
                if any(i == f"trproxy.protocols.{p}" or i.startswith(f"trproxy.protocols.{p}.")
                       for p in PROTOCOLS)]
    assert dialects == [], f"{module.name} imports a protocol package: {dialects}"
    docstrings = _docstrings(tree)
    named = [(node.lineno, node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and id(node) not in docstrings and NAMES.search(node.value)]
    assert named == [], f"{module.name} names a protocol in a string: {named}"


@pytest.mark.parametrize("module", _modules("protocols"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_protocols_do_no_io(module: Path) -> None:
    tree = ast.parse(module.read_text(), str(module))
    io = [i for i in _imports(tree, module) if i in NO_IO or i.split(".")[0] in NO_IO]
    assert io == [], f"{module.name} imports I/O modules: {io}"
    opens = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id in ("open", "input", "print")]
    assert opens == [], f"{module.name} calls open()/input()/print() at lines {opens}"


def test_the_checks_see_what_they_forbid() -> None:
    """The scans above are not vacuous: they find a protocol name and an I/O import."""
    tree = ast.parse('"""doc about http"""\nimport socket\nfrom ..protocols.http import x\n'
                     'KIND = "redis"\n')
    fake = PACKAGE / "proxy" / "fake.py"
    assert "socket" in _imports(tree, fake)
    assert "trproxy.protocols.http" in _imports(tree, fake)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and id(n) not in _docstrings(tree)]
    assert strings == ["redis"] and NAMES.search("redis") and not NAMES.search("threshold")
