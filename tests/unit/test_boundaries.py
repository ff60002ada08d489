"""The house rules that keep pure logic pure and SQL in one place, checked on the code.

1. Each pure module (domain logic, mappings, markups, error tables) imports, transitively,
   nothing that does I/O: no aiohttp, SQLAlchemy, matrix-nio, database drivers, and none of
   the hub's own I/O modules. Checked by importing it in a fresh interpreter.
2. SQL lives in hub/db only: no module outside it imports SQLAlchemy.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUB = ROOT / "hub"

PURE = [
    "hub.errors",
    "hub.core.types",
    "hub.core.text",
    "hub.core.commands",
    "hub.core.command_args",
    "hub.jobs.kinds",
    "hub.jobs.job",
    "hub.commerce.money",
    "hub.commerce.cart",
    "hub.commerce.orders",
    "hub.commerce.catalogue",
    "hub.commerce.catalogue_files",
    "hub.commerce.render",
    "hub.commerce.providers.base",
    "hub.matrix.render",
    "hub.matrix.startup_errors",
    "hub.scheduler.hours",
    "hub.scheduler.when",
    "hub.consent.photo",
    "hub.consent.questions",
    "hub.bridges.webchat.limits",
    "hub.consent.newsletter",
    "hub.consent.gdpr",
    "hub.advisers.routing",
    "hub.bridges.webchat.formatting",
    "hub.advisers.lobby",
    "hub.advisers.canned",
    "hub.advisers.context",
    "hub.kpi.model",
    "hub.kpi.compute",
    "hub.kpi.render",
    "hub.matrix.crypto.cross_signing",
    "hub.bridges.whatsapp.mapping",
    "hub.bridges.whatsapp.markup",
    "hub.bridges.whatsapp.errors",
    "hub.bridges.whatsapp.outbound",
    "hub.bridges.telegram.mapping",
    "hub.bridges.telegram.markup",
    "hub.bridges.telegram.errors",
    "hub.bridges.meta.mapping",
    "hub.bridges.meta.errors",
]
# Libraries that do I/O, and the hub's own modules that do.
FORBIDDEN = ("aiohttp", "sqlalchemy", "nio", "asyncpg", "aiosqlite", "alembic", "stripe")
FORBIDDEN_HUB = (
    "hub.db",
    "hub.net",
    "hub.app",
    "hub.matrix.client",
    "hub.bridges.base",
    "hub.bridges.graph",
    "hub.jobs.worker",
)

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_transitively(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    loaded = json.loads(out.stdout)
    bad = [
        m
        for m in loaded
        if m.split(".")[0] in FORBIDDEN
        or any(m == f or m.startswith(f + ".") for f in FORBIDDEN_HUB)
    ]
    assert bad == [], f"{module} pulls in I/O: {bad[:10]}"


def _imports(path: Path) -> set[str]:
    """Top-level names a module imports at run time (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_sql_lives_in_hub_db_only() -> None:
    outside = [
        p
        for p in HUB.rglob("*.py")
        if not p.is_relative_to(HUB / "db") and "migrations" not in p.parts
    ]
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "sqlalchemy")
        for p in outside
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_pure_list_names_real_modules() -> None:
    for module in PURE:
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.exists(), module
