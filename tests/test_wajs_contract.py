"""Every WPP function and event the driver uses exists in the pinned @wppconnect/wa-js types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from session_pod.driver import BRIDGE_JS
from tests.support.processes import REPO

WAJS = REPO / "node_modules/@wppconnect/wa-js"
DIST = WAJS / "dist"


def used_functions(source: str) -> set[tuple[str, str]]:
    """`WPP.chat.sendTextMessage(` -> ('chat', 'sendTextMessage')."""
    return set(re.findall(r"\bWPP\.(\w+)\.(\w+)\s*\(", source))


def used_events(source: str) -> set[str]:
    """The keys of the bridge's EVENTS table: 'conn.authenticated', ..."""
    table = re.search(r"const EVENTS = \{(.*?)\n  \};", source, re.S)
    assert table, "bridge.js has no EVENTS table"
    return set(re.findall(r"'(\w+\.\w+)':", table.group(1)))


def missing_functions(names: set[tuple[str, str]], dist: Path) -> list[str]:
    missing = []
    for namespace, function in sorted(names):
        declarations = "\n".join(p.read_text() for p in (dist / namespace).rglob("*.d.ts"))
        if not re.search(rf"export declare function {function}\b", declarations):
            missing.append(f"WPP.{namespace}.{function}")
    return missing


def missing_events(names: set[str], dist: Path) -> list[str]:
    declared = "\n".join(p.read_text() for p in dist.rglob("eventTypes.d.ts"))
    return sorted(name for name in names if f"'{name}':" not in declared)


def test_the_pinned_version_is_installed() -> None:
    pinned = json.loads((REPO / "package.json").read_text())["dependencies"]["@wppconnect/wa-js"]
    installed = json.loads((WAJS / "package.json").read_text())["version"]
    assert installed == pinned
    assert (DIST / "wppconnect-wa.js").stat().st_size > 100_000


def test_the_bridge_uses_a_real_subset_of_wpp() -> None:
    functions, events = used_functions(BRIDGE_JS), used_events(BRIDGE_JS)
    assert len(functions) >= 10 and len(events) >= 8
    assert missing_functions(functions, DIST) == []
    assert missing_events(events, DIST) == []


def test_loader_readiness_and_event_subscription_exist() -> None:
    assert "WPP.isReady" in BRIDGE_JS and "WPP.on(" in BRIDGE_JS
    assert re.search(r"export declare let isReady\b", (DIST / "loader/index.d.ts").read_text())
    assert re.search(r"\bon,", (DIST / "index.d.ts").read_text())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("WPP.chat.sendTextMesage(id, text)", ["WPP.chat.sendTextMesage"]),
        ("WPP.conn.getQrCode()", ["WPP.conn.getQrCode"]),
    ],
)
def test_the_check_catches_a_name_wa_js_does_not_have(source: str, expected: list[str]) -> None:
    assert missing_functions(used_functions(source), DIST) == expected
    assert missing_events({"conn.qr_scanned"}, DIST) == ["conn.qr_scanned"]
