"""The Helm chart (charts/whatsapp-sessions) and the Dockerfiles (docker/): lint, render,
schema, the CRD copies, and the rendered objects accepted by a real kube-apiserver."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from session_pod.config import Settings
from tests.support.control_plane import ControlPlane, control_plane_binaries
from tests.support.operator import CHART
from tests.support.processes import REPO
from whatsapp_common.keys import parse_ring

DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))

# Every branch of the templates: S3 with credentials, webhooks, the router's own Secret.
FULL_VALUES = [
    "s3.bucket=wa-backups",
    "s3.region=eu-west-1",
    "s3.endpoint=http://seaweed:8333",
    "s3.existingSecret=wa-session",
    "rails.url=http://rails",
    "rails.port=3000",
    "rails.webhookSecret.existingSecret=wa-session",
    "router.token.existingSecret=wa-router",
    "operator.backupKeys.existingSecret=wa-backup-keys",
    "podAuth.existingSecret=wa-pod-auth",
    "metrics.scrapeTokens.existingSecret=wa-scrape",
    "networkPolicy.scrapers[0].namespaceSelector.matchLabels.name=monitoring",
    "router.replicas=3",
    "session.storage.storageClassName=fast",
    "imagePullSecrets[0].name=registry",
]


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return control_plane_binaries() / "helm"
    except subprocess.CalledProcessError:
        pytest.skip("helm is not available: scripts/control_plane.sh failed (Go missing?)")


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


def render(helm: Path, namespace: str = "shops", values: list[str] | None = None) -> str:
    sets = [f"--set={value}" for value in values or []]
    result = run_helm(helm, "template", "wa", str(CHART), "--namespace", namespace, *sets)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(manifest: str) -> dict[tuple[str, str], dict]:
    return {
        (doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(manifest) if doc
    }


def container_env(container: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in container["env"]}


def test_the_charts_crds_are_identical_copies_of_crds() -> None:
    source = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert copies == source, "run `make chart-crds`"
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/whatsapp-sessions/crds/{name} differs from crds/{name}: run `make chart-crds`"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_run_as_non_root_and_download_no_browser(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, f"{dockerfile.name} has no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name} runs as root"
    assert "playwright install" not in text
    # Every stage from Debian's own image, which scripts/base_image.sh can make without a registry.
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert set(bases) == {"docker.io/library/debian:bookworm-slim"}, bases
    # The CA reaches pip only as a build secret: never COPY'd or ADD'ed into a layer.
    assert not re.search(r"^(COPY|ADD)\b.*\.(crt|pem)\b", text, re.MULTILINE)
    assert "--mount=type=secret,id=build-ca" in text
    for label in ("org.opencontainers.image.version", "org.opencontainers.image.source"):
        assert label in text


def test_the_three_images_have_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "operator.Dockerfile",
        "router.Dockerfile",
        "session-pod.Dockerfile",
    ]
    session = (REPO / "docker" / "session-pod.Dockerfile").read_text()
    # (the install spans lines; [^&] stays within the one command)
    install = r"apt-get install [^&]*\bchromium-headless-shell\b[^&]*\blibatomic1\b"
    assert re.search(install, session)
    assert f"CHROMIUM_PATH={Settings.chromium_path} " in session
    assert "wajs_bundle.py package-lock.json" in session
    assert "WAJS_BUNDLE=/opt/wa-js/wppconnect-wa.js" in session
    assert "'.[session-pod]'" in session
    for program in ("operator", "router"):
        text = (REPO / "docker" / f"{program}.Dockerfile").read_text()
        assert f"'.[{program}]'" in text
        assert "chromium" not in re.sub(r"^#.*$", "", text, flags=re.MULTILINE)


def test_helm_lint_strict_is_clean(helm: Path) -> None:
    for values in ([], FULL_VALUES):
        sets = [f"--set={value}" for value in values]
        result = run_helm(helm, "lint", "--strict", str(CHART), *sets)
        assert result.returncode == 0, result.stdout + result.stderr


def test_helm_template_renders_the_operator_and_the_router(helm: Path) -> None:
    rendered = objects(render(helm, values=FULL_VALUES))
    assert sorted(rendered) == sorted(
        [
            ("ServiceAccount", "wa-whatsapp-sessions-operator"),
            ("Role", "wa-whatsapp-sessions-operator"),
            ("RoleBinding", "wa-whatsapp-sessions-operator"),
            ("KopfPeering", "whatsapp-sessions"),
            ("StatefulSet", "wa-whatsapp-sessions-operator"),
            ("ServiceAccount", "wa-whatsapp-sessions-router"),
            ("Role", "wa-whatsapp-sessions-router"),
            ("RoleBinding", "wa-whatsapp-sessions-router"),
            ("Deployment", "wa-whatsapp-sessions-router"),
            ("Service", "wa-whatsapp-sessions-router"),
            ("PodDisruptionBudget", "wa-whatsapp-sessions-router"),
            ("NetworkPolicy", "wa-whatsapp-sessions-session-pods"),
        ]
    )

    operator = rendered[("StatefulSet", "wa-whatsapp-sessions-operator")]
    assert operator["spec"]["replicas"] == 2
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=whatsapp-sessions" in container["args"]
    assert "--priority=$(POD_INDEX)" in container["args"]
    assert "--namespace=shops" in container["args"]
    env = container_env(container)
    assert env["SESSION_IMAGE"]["value"] == "ghcr.io/whatsapp-sessions/session-pod:0.1.0"
    assert env["SESSION_SECRET"]["value"] == "wa-session"
    assert json.loads(env["SESSION_POD_ENV"]["value"]) == {
        "S3_BUCKET": "wa-backups",
        "S3_REGION": "eu-west-1",
        "S3_ENDPOINT_URL": "http://seaweed:8333",
        "S3_PREFIX": "whatsapp-sessions",
        "RAILS_APP_URL": "http://rails",
        "RAILS_APP_PORT": "3000",
        "RAILS_APP_ENDPOINT_SCOPE": "whatsapp_js",
    }
    assert json.loads(env["SESSION_DEFAULTS"]["value"])["storage"] == {
        "size": "1Gi",
        "storageClassName": "fast",
    }
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "wa-session"
    masters = env["BACKUP_MASTER_KEYS"]["valueFrom"]["secretKeyRef"]
    assert masters == {"name": "wa-backup-keys", "key": "keys"}
    pod_auth = env["POD_AUTH_MASTER_KEYS"]["valueFrom"]["secretKeyRef"]
    assert pod_auth == {"name": "wa-pod-auth", "key": "keys"}
    scrape = env["METRICS_TOKENS"]["valueFrom"]["secretKeyRef"]
    assert scrape == {"name": "wa-scrape", "key": "tokens"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Only the operator may touch Secrets, and it cannot list them; the router none.
    rules = {
        name: [r for r in role["rules"] if "secrets" in r["resources"]]
        for (kind, name), role in rendered.items()
        if kind == "Role"
    }
    assert rules == {
        "wa-whatsapp-sessions-operator": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]}
        ],
        "wa-whatsapp-sessions-router": [],
    }

    router = rendered[("Deployment", "wa-whatsapp-sessions-router")]
    assert router["spec"]["replicas"] == 3
    container = router["spec"]["template"]["spec"]["containers"][0]
    token = container_env(container)["ROUTER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "wa-router", "key": "token"}
    # The pod-auth masters as a file the router reads again (a rotation, no restart).
    (mount,) = container["volumeMounts"]
    (volume,) = router["spec"]["template"]["spec"]["volumes"]
    assert mount["name"] == volume["name"] == "pod-auth" and mount["readOnly"] is True
    assert volume["secret"] == {
        "secretName": "wa-pod-auth",
        "items": [{"key": "keys", "path": "keys"}],
    }
    file = container_env(container)["POD_AUTH_MASTER_KEYS_FILE"]["value"]
    assert file == f"{mount['mountPath']}/keys"
    # Session pods: the router and the operator, and the scrapers (to /metrics).
    policy = rendered[("NetworkPolicy", "wa-whatsapp-sessions-session-pods")]["spec"]
    assert [len(rule["from"]) for rule in policy["ingress"]] == [2, 1]
    assert policy["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_without_an_existing_secret_the_router_token_is_generated(helm: Path) -> None:
    rendered = objects(render(helm))
    secret = rendered[("Secret", "wa-whatsapp-sessions-router-token")]
    assert len(secret["data"]["token"]) >= 40
    masters = rendered[("Secret", "wa-whatsapp-sessions-operator-backup-keys")]
    ring = parse_ring(base64.b64decode(masters["data"]["keys"]).decode())
    assert ring.names == ["initial"] and len(ring.current.secret) == 32
    pod_auth = rendered[("Secret", "wa-whatsapp-sessions-pod-auth-keys")]
    ring = parse_ring(base64.b64decode(pod_auth["data"]["keys"]).decode())
    assert ring.names == ["initial"] and len(ring.current.secret) == 32
    scrape = rendered[("Secret", "wa-whatsapp-sessions-metrics-scrape")]["data"]
    token = base64.b64decode(scrape["token"]).decode()
    assert len(token) == 40 and base64.b64decode(scrape["tokens"]).decode() == f"prometheus:{token}"
    env = container_env(
        rendered[("StatefulSet", "wa-whatsapp-sessions-operator")]["spec"]["template"]["spec"][
            "containers"
        ][0]
    )
    assert "SESSION_SECRET" not in env  # the operator's default, optional in the pods
    assert json.loads(env["SESSION_POD_ENV"]["value"]) == {"S3_PREFIX": "whatsapp-sessions"}


def test_a_router_tokens_secret_is_mounted_as_the_file_the_router_reads(helm: Path) -> None:
    """Several tokens (rotation): the Secret is a mounted file, which the kubelet updates in
    place and the router reads again; no single token is generated or set beside it."""
    rendered = objects(render(helm, values=["router.tokens.existingSecret=wa-router-tokens"]))
    assert ("Secret", "wa-whatsapp-sessions-router-token") not in rendered
    pod = rendered[("Deployment", "wa-whatsapp-sessions-router")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = container_env(container)
    assert "ROUTER_TOKEN" not in env
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tokens")
    volume = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "wa-router-tokens"
    (item,) = volume["secret"]["items"]
    assert item["key"] == "tokens"
    assert env["ROUTER_TOKENS_FILE"]["value"] == f"{mount['mountPath']}/{item['path']}"


@pytest.mark.parametrize(
    "bad",
    [
        "router.replicas=-1",
        "operator.replicas=0",
        "images.router.pullPolicy=Sometimes",
        "session.backup.intervalSeconds=10",
        "session.storage.size=lots",
        "rails.url=rails:3000",
        "router.token.existingSecret=Not_A_Name",
        "s3.unknown=1",
    ],
)
def test_values_schema_rejects_bad_values(helm: Path, bad: str) -> None:
    result = run_helm(helm, "template", "wa", str(CHART), f"--set={bad}")
    assert result.returncode != 0, f"--set {bad} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_two_different_session_secrets_are_refused(helm: Path) -> None:
    result = run_helm(
        helm,
        "template",
        "wa",
        str(CHART),
        "--set=s3.existingSecret=a",
        "--set=rails.webhookSecret.existingSecret=b",
    )
    assert result.returncode != 0
    assert "must name the same Secret" in result.stderr


@pytest.fixture
def chart_namespace(control_plane: ControlPlane) -> Iterator[str]:
    control_plane.install_crds(*sorted((CHART / "crds").glob("*.yaml")))
    name = f"chart-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.mark.slow
@pytest.mark.parametrize(
    "values",
    [[], FULL_VALUES, ["router.tokens.existingSecret=wa-router-tokens"]],
    ids=["defaults", "full", "router-tokens-file"],
)
def test_the_api_server_accepts_the_rendered_objects(
    control_plane: ControlPlane, chart_namespace: str, values: list[str]
) -> None:
    manifest = render(control_plane.helm_binary, chart_namespace, values)
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", chart_namespace, "-f", "-", stdin=manifest
    )
    applied = result.stdout.splitlines()
    assert len(applied) == len(objects(manifest)), result.stdout
    assert all(line.endswith("(server dry run)") for line in applied), result.stdout
