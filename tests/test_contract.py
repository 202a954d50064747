"""The contract between the programs is defined once (whatsapp_common), and the programs
depend on it and not on each other."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.import_rules import SOURCES, undeclared_imports, wrong_imports
from whatsapp_common import crd
from whatsapp_common.event_types import EventType
from whatsapp_common.states import ALL_PHASES, PHASE_OF_STATE, Phase, SessionState, phase_of

REPO = Path(__file__).resolve().parents[1]


def test_no_program_imports_another_and_the_shared_package_imports_none() -> None:
    assert wrong_imports(REPO) == []


def test_a_planted_wrong_import_is_found(tmp_path: Path) -> None:
    for folder in SOURCES.values():
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("*.pyc"))
    api = tmp_path / "router/whatsapp_router/api.py"
    api.write_text(api.read_text() + "\nfrom session_pod.config import Settings\n")
    common = tmp_path / "whatsapp_common/answers.py"
    common.write_text(common.read_text() + "\nimport kopf\n")
    found = {(w.file, w.imported) for w in wrong_imports(tmp_path)}
    assert found == {
        ("router/whatsapp_router/api.py", "session_pod.config"),
        ("whatsapp_common/answers.py", "kopf"),
    }


def test_every_program_imports_only_what_its_extra_installs() -> None:
    """Each image installs one extra of pyproject.toml: a module the program imports, through
    the shared package too, that its extra does not install fails only in the image."""
    assert undeclared_imports(REPO) == []


def test_an_undeclared_import_is_found(tmp_path: Path) -> None:
    for folder in SOURCES.values():
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    pod_auth = tmp_path / "whatsapp_common/pod_auth.py"  # reached from the router's config
    pod_auth.write_text(pod_auth.read_text() + "\nimport boto3\n")
    assert undeclared_imports(tmp_path) == [("router", "boto3", "whatsapp_common.pod_auth")]


def test_local_mode_imports_neither_kopf_nor_the_kubernetes_client() -> None:
    check = (
        "import sys, whatsapp_router.local; "
        "loaded = [m for m in ('kopf', 'kubernetes', 'whatsapp_operator', 'session_pod') "
        "if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _crd() -> dict:
    return yaml.safe_load((REPO / "crds/whatsappsessions.yaml").read_text())


def test_the_crds_coordinates_and_phases_are_the_contracts() -> None:
    definition = _crd()
    assert definition["spec"]["group"] == crd.GROUP
    assert definition["spec"]["names"]["kind"] == crd.KIND
    assert definition["spec"]["names"]["plural"] == crd.PLURAL
    assert [v["name"] for v in definition["spec"]["versions"]] == [crd.VERSION]
    status = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert sorted(status["properties"]["phase"]["enum"]) == sorted(map(str, ALL_PHASES))


def test_every_session_state_has_its_phase() -> None:
    assert set(PHASE_OF_STATE) == set(SessionState)
    assert len(set(PHASE_OF_STATE.values())) == len(SessionState)
    assert phase_of("qr_required") is Phase.QR_REQUIRED
    assert phase_of("hibernating-or-anything-unknown") is None


def test_readme_lists_exactly_the_event_types() -> None:
    readme = (REPO / "README.md").read_text()
    paragraph = readme.split("Events (in `/events` and as webhooks):", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", paragraph)) == {str(e) for e in EventType}


def test_the_chart_selects_the_pods_by_the_contracts_labels() -> None:
    policy = (REPO / "charts/whatsapp-sessions/templates/networkpolicy.yaml").read_text()
    assert f"{crd.APP_LABEL}: {crd.APP}" in policy
