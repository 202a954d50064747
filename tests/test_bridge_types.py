"""bridge.js type-checks against the pinned @wppconnect/wa-js declarations (TypeScript, pinned
in package.json): every WPP call, result field and event payload. The event table is checked
with `@satisfies` against wa-js's own EventTypes, so a misspelt event or payload field fails.
Each planted mistake below must fail the same check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from session_pod.driver import BRIDGE_JS
from tests.support.processes import REPO

TSC = REPO / "node_modules/.bin/tsc"
SHIM = REPO / "tests/typecheck/shim.d.ts"
OPTIONS = [
    "--noEmit",
    "--allowJs",
    "--checkJs",
    "--strict",
    "--skipLibCheck",
    "--target",
    "es2022",
    "--lib",
    "es2022,dom",
    "--module",
    "esnext",
    "--moduleResolution",
    "bundler",
]


def typecheck(bridge: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TSC), *OPTIONS, str(SHIM), str(bridge)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_the_pinned_versions_are_installed() -> None:
    package = json.loads((REPO / "package.json").read_text())
    wajs = REPO / "node_modules/@wppconnect/wa-js"
    installed = json.loads((wajs / "package.json").read_text())["version"]
    assert installed == package["dependencies"]["@wppconnect/wa-js"]
    assert (wajs / "dist/wppconnect-wa.js").stat().st_size > 100_000
    typescript = json.loads((REPO / "node_modules/typescript/package.json").read_text())
    assert typescript["version"] == package["devDependencies"]["typescript"]


def test_the_bridge_type_checks_against_the_pinned_wa_js() -> None:
    result = typecheck(REPO / "session_pod/bridge.js")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("right", "wrong", "error"),
    [
        ("'chat.new_message': (m)", "'chat.new_mesage': (m)", "'chat.new_mesage'' does not exist"),
        ("ack: e.ack, chat", "ack: e.akc, chat", "Property 'akc' does not exist"),
        ("WPP.chat.sendTextMessage(", "WPP.chat.sendTextMesage(", "'sendTextMesage' does not"),
        ("?.messageSendResult", "?.messageSendRsult", "'messageSendRsult' does not exist"),
        ("{ wid: wid(found.wid) }", "{ wid: wid(found.wdi) }", "Property 'wdi' does not exist"),
        ("WPP.conn.getAuthCode()", "WPP.conn.getQrCode()", "'getQrCode' does not exist"),
    ],
    ids=["event-name", "event-payload", "function", "result-field", "query-field", "conn"],
)
def test_each_kind_of_mistake_fails_the_check(
    tmp_path: Path, right: str, wrong: str, error: str
) -> None:
    assert right in BRIDGE_JS
    planted = tmp_path / "bridge.js"
    planted.write_text(BRIDGE_JS.replace(right, wrong, 1))
    result = typecheck(planted)
    assert result.returncode != 0
    assert error in result.stdout, result.stdout
