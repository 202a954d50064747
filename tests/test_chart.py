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
from whatsapp_operator.rollout_plan import RolloutSettings, Window

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
    "linkKeys.existingSecret=wa-link-keys",
    "router.publicUrl=https://wa.example.com/",
    "metrics.scrapeTokens.existingSecret=wa-scrape",
    "networkPolicy.scrapers[0].namespaceSelector.matchLabels.name=monitoring",
    "router.replicas=3",
    "session.storage.storageClassName=fast",
    "imagePullSecrets[0].name=registry",
    "operator.rollout.canary=2",
    "operator.rollout.maxUnavailable=5%",
    "operator.rollout.deadlineSeconds=300",
    "operator.rollout.window=22:00-04:00",
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
        # The `qr` webhook's link page URL: the router's public URL, each pod's own link key.
        "LINK_BASE_URL": "https://wa.example.com",
        "LINK_TTL_SECONDS": "900",
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
    link_masters = env["LINK_MASTER_KEYS"]["valueFrom"]["secretKeyRef"]
    assert link_masters == {"name": "wa-link-keys", "key": "keys"}
    # The rollout settings, as the operator reads them; the release revision as generation.
    rollout = RolloutSettings.from_env({k: v["value"] for k, v in env.items() if "value" in v})
    assert (str(rollout.canary), str(rollout.max_unavailable), str(rollout.max_failures)) == (
        "2",
        "5%",
        "0",
    )
    assert rollout.window == Window(22 * 60, 4 * 60) and rollout.deadline_seconds == 300
    assert rollout.generation == 1 and rollout.rollback_failed is True
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Only the operator may touch Secrets (it watches the locations' keys Secrets, selected by
    # label, so an operator restart re-derives them without a read each); the router none.
    rules = {
        name: [r for r in role["rules"] if "secrets" in r["resources"]]
        for (kind, name), role in rendered.items()
        if kind == "Role"
    }
    assert rules == {
        "wa-whatsapp-sessions-operator": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get", "list", "watch", "create", "patch"],
            }
        ],
        "wa-whatsapp-sessions-router": [],
    }
    operator_rules = rendered[("Role", "wa-whatsapp-sessions-operator")]["rules"]
    assert {
        "apiGroups": ["whatsapp-sessions.io"],
        "resources": ["whatsappsessionrollouts"],
        "verbs": ["get", "list", "watch", "create", "update"],
    } in operator_rules

    router = rendered[("Deployment", "wa-whatsapp-sessions-router")]
    assert router["spec"]["replicas"] == 3
    container = router["spec"]["template"]["spec"]["containers"][0]
    token = container_env(container)["ROUTER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "wa-router", "key": "token"}
    # The pod-auth and link masters as files the router reads again (a rotation, no restart).
    router_env = container_env(container)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in router["spec"]["template"]["spec"]["volumes"]}
    assert sorted(mounts) == sorted(volumes) == ["link-keys", "pod-auth"]
    for name, secret, variable in [
        ("pod-auth", "wa-pod-auth", "POD_AUTH_MASTER_KEYS_FILE"),
        ("link-keys", "wa-link-keys", "LINK_MASTER_KEYS_FILE"),
    ]:
        assert mounts[name]["readOnly"] is True
        assert volumes[name]["secret"] == {
            "secretName": secret,
            "items": [{"key": "keys", "path": "keys"}],
        }
        assert router_env[variable]["value"] == f"{mounts[name]['mountPath']}/keys"
    # Link pages' URLs start with the public URL; their lifetime by default and at most.
    assert router_env["ROUTER_PUBLIC_URL"]["value"] == "https://wa.example.com/"
    assert router_env["LINK_TTL_SECONDS"]["value"] == "900"
    assert router_env["LINK_MAX_TTL_SECONDS"]["value"] == "604800"
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
    link = rendered[("Secret", "wa-whatsapp-sessions-link-keys")]
    ring = parse_ring(base64.b64decode(link["data"]["keys"]).decode())
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
    assert "LINK_MASTER_KEYS" not in env  # no public URL: no link in the `qr` webhook
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


def test_hibernation_settings_reach_the_operator_and_the_router(helm: Path) -> None:
    values = [
        "session.hibernation.enabled=true",
        "session.hibernation.idleSeconds=600",
        "router.wakeHoldSeconds=0",
    ]
    rendered = objects(render(helm, values=values))
    operator = rendered[("StatefulSet", "wa-whatsapp-sessions-operator")]
    env = container_env(operator["spec"]["template"]["spec"]["containers"][0])
    defaults = json.loads(env["SESSION_DEFAULTS"]["value"])
    assert defaults["hibernation"] == {
        "enabled": True,
        "idleSeconds": 600,
        "wakeIntervalSeconds": 86400,
    }
    router = rendered[("Deployment", "wa-whatsapp-sessions-router")]
    env = container_env(router["spec"]["template"]["spec"]["containers"][0])
    assert env["WAKE_HOLD_SECONDS"]["value"] == "0"
    # The router asks for a wake through the status only: it can change no spec.
    rules = rendered[("Role", "wa-whatsapp-sessions-router")]["rules"]
    writes = [r for r in rules if {"create", "patch", "update"} & set(r["verbs"])]
    assert writes == [
        {
            "apiGroups": ["whatsapp-sessions.io"],
            "resources": ["whatsappsessions"],
            "verbs": ["get", "list", "watch", "create"],
        },
        {
            "apiGroups": ["whatsapp-sessions.io"],
            "resources": ["whatsappsessions/status"],
            "verbs": ["patch"],
        },
    ]
    defaults_off = json.loads(
        container_env(
            objects(render(helm))[("StatefulSet", "wa-whatsapp-sessions-operator")]["spec"][
                "template"
            ]["spec"]["containers"][0]
        )["SESSION_DEFAULTS"]["value"]
    )
    assert defaults_off["hibernation"]["enabled"] is False


def test_operator_shards_render_one_statefulset_and_peering_object_per_shard(
    helm: Path,
) -> None:
    """operator.shards: 2 makes two operator StatefulSets that select only their own pods,
    each told its shard and peering in its own KopfPeering; the router knows the count and may
    label resources. With one shard the names are those of a release that never sharded."""
    rendered = objects(render(helm, values=["operator.shards=2"]))
    peerings = sorted(name for kind, name in rendered if kind == "KopfPeering")
    assert peerings == ["whatsapp-sessions-shard-0", "whatsapp-sessions-shard-1"]
    for index in (0, 1):
        statefulset = rendered[("StatefulSet", f"wa-whatsapp-sessions-operator-shard-{index}")]
        selector = statefulset["spec"]["selector"]["matchLabels"]
        assert selector["whatsapp-sessions.io/operator-shard"] == f"shard-{index}"
        template = statefulset["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items()
        container = template["spec"]["containers"][0]
        assert container_env(container)["SHARD"]["value"] == f"shard-{index}"
        assert f"--peering=whatsapp-sessions-shard-{index}" in container["args"]
    router = rendered[("Deployment", "wa-whatsapp-sessions-router")]["spec"]["template"]
    assert container_env(router["spec"]["containers"][0])["OPERATOR_SHARDS"]["value"] == "2"
    role = rendered[("Role", "wa-whatsapp-sessions-router")]
    sessions = next(r for r in role["rules"] if "whatsappsessions" in r["resources"])
    assert "patch" in sessions["verbs"]

    single = objects(render(helm))
    assert [name for kind, name in single if kind == "KopfPeering"] == ["whatsapp-sessions"]
    operator = single[("StatefulSet", "wa-whatsapp-sessions-operator")]["spec"]["template"]
    assert "SHARD" not in container_env(operator["spec"]["containers"][0])
    assert "--peering=whatsapp-sessions" in operator["spec"]["containers"][0]["args"]
    role = single[("Role", "wa-whatsapp-sessions-router")]
    sessions = next(r for r in role["rules"] if "whatsappsessions" in r["resources"])
    assert "patch" not in sessions["verbs"]


@pytest.mark.parametrize(
    "bad",
    [
        "router.replicas=-1",
        "operator.replicas=0",
        "operator.shards=0",
        "images.router.pullPolicy=Sometimes",
        "session.backup.intervalSeconds=10",
        "session.storage.size=lots",
        "rails.url=rails:3000",
        "router.token.existingSecret=Not_A_Name",
        "router.publicUrl=wa.example.com",
        "router.publicUrl=https://wa.example.com/?a=1",
        "linkKeys.existingSecret=Not_A_Name",
        "s3.unknown=1",
        "session.hibernation.enabled=sometimes",
        "session.hibernation.wakeIntervalSeconds=1209600",
        "router.wakeHoldSeconds=-1",
        "operator.rollout.maxUnavailable=lots",
        "operator.rollout.maxUnavailable=150%",
        "operator.rollout.window=22-04",
        "operator.rollout.deadlineSeconds=0",
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
    [
        [],
        FULL_VALUES,
        ["router.tokens.existingSecret=wa-router-tokens"],
        ["operator.shards=3"],
    ],
    ids=["defaults", "full", "router-tokens-file", "shards"],
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
