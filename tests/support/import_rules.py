"""The import direction of the programs: each imports the shared package and never another
program. Read from the source (ast), so a wrong import is found without running it."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("session_pod", "whatsapp_operator", "whatsapp_router")
SHARED = "whatsapp_common"
# Where each package's source lives, from the repository's root.
SOURCES = {
    "session_pod": "session_pod",
    "whatsapp_operator": "operator/whatsapp_operator",
    "whatsapp_router": "router/whatsapp_router",
    SHARED: SHARED,
}
# What no module of the shared package may import: it is imported by local mode (no kopf,
# no Kubernetes client) and by every image (no browser driver). whatsapp_common.kube_clients
# is the one module of it that needs the Kubernetes client, and only the operator and the
# router's cluster backend import it.
SHARED_FORBIDS = ("kopf", "playwright")


@dataclass(frozen=True)
class WrongImport:
    file: str
    line: int
    imported: str
    rule: str


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import; relative imports stay in their package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def wrong_imports(root: Path) -> list[WrongImport]:
    """Every import under `root` (a repository checkout) that breaks the direction."""
    wrong = []
    for package, folder in SOURCES.items():
        for path in sorted((root / folder).rglob("*.py")):
            for line, module in imported_modules(path.read_text()):
                top = module.split(".")[0]
                name = str(path.relative_to(root))
                if package == SHARED and top in (*PROGRAMS, *SHARED_FORBIDS):
                    wrong.append(WrongImport(name, line, module, "the shared package imports it"))
                elif package in PROGRAMS and top in PROGRAMS and top != package:
                    wrong.append(WrongImport(name, line, module, f"{package} imports {top}"))
    return wrong
