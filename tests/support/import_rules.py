"""The import direction of the programs: each imports the shared package and never another
program. Read from the source (ast), so a wrong import is found without running it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
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
# Which extra of pyproject.toml each program's image (or local mode) installs, and the modules
# it runs from: local mode is the router's local.py with the session pod's extra.
EXTRAS = {
    "session-pod": ("session_pod", ()),
    "operator": ("whatsapp_operator", ()),
    "router": ("whatsapp_router", ("whatsapp_router.local",)),
    "local": ("whatsapp_router.local", ()),
}
# Imported directly, installed as a pinned requirement of a declared distribution.
PROVIDED_BY = {"urllib3": "kubernetes", "botocore": "boto3"}


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


def module_names(root: Path) -> dict[str, Path]:
    """Every first-party module (`whatsapp_router.app`, `whatsapp_common.keys`...) and its file."""
    modules = {}
    for package, folder in SOURCES.items():
        for path in (root / folder).rglob("*.py"):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def third_party_imports(root: Path, entries: list[str]) -> dict[str, str]:
    """The top-level names of what is not first-party or the standard library that the
    modules `entries` import, following first-party imports (absolute and relative) through
    to the end: name -> the first module that imports it."""
    modules = module_names(root)
    seen, queue, found = set(entries), list(entries), {}
    while queue:
        module = queue.pop()
        path = modules[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                head = ".".join(p for p in (base, node.module or "") if p)
                names = [head] + [f"{head}.{alias.name}" for alias in node.names]
            for name in names:
                top = name.split(".")[0]
                if name in modules and name not in seen:
                    seen.add(name)
                    queue.append(name)
                elif top not in SOURCES and top not in sys.stdlib_module_names:
                    found.setdefault(top, module)
    return found


def undeclared_imports(root: Path) -> list[tuple[str, str, str]]:
    """(extra, imported name, importing module) for every third-party import a program makes
    that neither the base dependencies nor its extra (nor what PROVIDED_BY names) install."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    distributions = importlib.metadata.packages_distributions()
    modules = module_names(root)
    missing = []
    for extra, (prefix, left_out) in EXTRAS.items():
        declared = _declared(project["dependencies"], extras, extra)
        entries = [
            m for m in modules if (m == prefix or m.startswith(f"{prefix}.")) and m not in left_out
        ]
        for name, module in sorted(third_party_imports(root, entries).items()):
            given = {_normalized(d) for d in distributions.get(name, [name])}
            if not given & declared and PROVIDED_BY.get(name) not in declared:
                missing.append((extra, name, module))
    return missing


def _declared(base: list[str], extras: dict[str, list[str]], extra: str) -> set[str]:
    """The distributions `extra` installs by name, the project's own extras expanded."""
    names = set()
    for requirement in [*base, *extras[extra]]:
        name = _normalized(re.split(r"[\[=<>~! ;]", requirement, maxsplit=1)[0])
        if name == "whatsapp-sessions":
            for inner in re.findall(r"\[([^\]]+)\]", requirement)[0].split(","):
                names |= _declared(base, extras, inner.strip())
        else:
            names.add(name)
    return names


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()
