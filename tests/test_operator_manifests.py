"""Unit tests of the operator's pure parts: names from location ids, the manifests."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

from tests.support.processes import REPO
from tests.support.session_pods import TEST_MASTERS, TEST_POD_AUTH_MASTERS
from whatsapp_common.keys import KeyRing, NamedKey, parse_ring
from whatsapp_common.link_tokens import InvalidLinkToken, LinkGrant, sign, verify
from whatsapp_common.naming import (
    LOCATION_ID_MAX,
    LOCATION_ID_PATTERN,
    MAX_NAME,
    session_name,
    valid_location_id,
)
from whatsapp_operator.config import ConfigError, OperatorConfig, with_defaults
from whatsapp_operator.fleet import Fleet
from whatsapp_operator.manifests import (
    BACKUP_KEY_NAMES,
    keys_secret,
    replicas,
    service,
    statefulset,
)
from whatsapp_operator.resource import Resource

MASTERS_ENV = {
    "BACKUP_MASTER_KEYS": TEST_MASTERS.to_text(),
    "POD_AUTH_MASTER_KEYS": TEST_POD_AUTH_MASTERS.to_text(),
}
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("location", "name"),
    [("13", "wa-13"), ("beauty-shop", "wa-beauty-shop"), ("a.b", None), ("Loc_1", None)],
)
def test_names_are_dns_labels_and_plain_ids_stay_readable(location: str, name: str | None):
    derived = session_name(location)
    assert DNS_LABEL.match(derived) and len(derived) <= MAX_NAME
    if name is not None:
        assert derived == name


def test_ids_that_differ_only_in_case_or_punctuation_never_collide() -> None:
    ids = ["Loc_1", "loc-1", "LOC.1", "loc_1", "x" * 200, "x" * 201, "ñandú", "___"]
    names = [session_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(DNS_LABEL.match(n) and len(n) <= MAX_NAME for n in names)


def spec(**extra: object) -> dict[str, object]:
    return {"locationId": "13", **extra}


def rendered(spec: dict, config: OperatorConfig, replicas: int = 1) -> dict:
    """The StatefulSet of `spec` with the fleet settings of `config`, not sharded."""
    return statefulset(spec, "ns", Fleet.of(config), None, replicas)


def env_of(manifest: dict) -> dict[str, object]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_statefulset_runs_one_session_pod_with_probes_volume_and_secrets() -> None:
    config = OperatorConfig(
        pod_env={"S3_BUCKET": "backups"}, secret_name="wa-secrets", backup_masters=TEST_MASTERS
    )
    fleet = Fleet.of(config)
    sts = statefulset(spec(resources={"limits": {"memory": "600Mi"}}), "shops", fleet, None, 1)
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert sts["spec"]["replicas"] == 1
    assert sts["metadata"] == {
        "name": "wa-13",
        "namespace": "shops",
        "labels": sts["metadata"]["labels"],
        "annotations": {"whatsapp-sessions.io/fleet-revision": fleet.revision},
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"] == {"limits": {"memory": "600Mi"}}
    assert container["envFrom"] == [{"secretRef": {"name": "wa-secrets", "optional": True}}]
    # The location's keys and tokens as files the kubelet updates in place: no restart to
    # rotate them.
    assert {"name": "keys", "secret": {"secretName": "wa-13-keys", "defaultMode": 0o440}} in pod[
        "volumes"
    ]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "keys")
    assert mount["readOnly"] is True
    assert env_of(sts)["BACKUP_KEYS_FILE"] == f"{mount['mountPath']}/BACKUP_KEYS"
    assert env_of(sts)["POD_TOKENS_FILE"] == f"{mount['mountPath']}/POD_TOKENS"
    assert "METRICS_TOKENS_FILE" not in env_of(sts)  # no scrape token configured
    assert pod["automountServiceAccountToken"] is False
    assert pod["shareProcessNamespace"] is True
    assert pod["terminationGracePeriodSeconds"] >= 60
    env = env_of(sts)
    assert env["LOCATION_ID"] == "13" and env["S3_BUCKET"] == "backups"
    assert env["DATA_DIR"] == container["volumeMounts"][0]["mountPath"]
    assert env["HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_paused_means_zero_replicas_and_spec_changes_change_the_template() -> None:
    config = OperatorConfig(backup_masters=TEST_MASTERS)
    assert replicas(Resource("ns", "r", "uid", spec(paused=True))) == 0
    assert replicas(Resource("ns", "r", "uid", spec())) == 1
    assert rendered(spec(), config, replicas=0)["spec"]["replicas"] == 0
    plain = rendered(spec(), config)["spec"]["template"]
    changed = rendered(spec(backup={"intervalSeconds": 600}), config)["spec"]["template"]
    assert plain != changed  # the StatefulSet controller rolls the pod
    assert env_of({"spec": {"template": changed}})["BACKUP_INTERVAL_SECONDS"] == "600"


def test_a_pod_gets_its_own_locations_keys_and_never_a_master_key() -> None:
    masters = KeyRing((NamedKey("2026-12", b"n" * 32), NamedKey("2026-06", b"o" * 32)))
    pod_auth = KeyRing((NamedKey("auth-1", b"a" * 32),))
    config = OperatorConfig(backup_masters=masters, pod_auth_masters=lambda: pod_auth)
    secret = keys_secret(spec(), "ns", config)
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data["BACKUP_KEYS"] == masters.derive("backup", "13").to_text()
    assert parse_ring(data["BACKUP_KEYS"]).names == ["2026-12", "2026-06"]
    assert data["POD_TOKENS"] == pod_auth.derive("pod-token", "13").to_text()
    other = keys_secret(spec(locationId="14"), "ns", config)["data"]
    for key in ("BACKUP_KEYS", "POD_TOKENS"):  # location 14's keys and tokens differ
        assert base64.b64decode(other[key]).decode() != data[key]
    sts = rendered(spec(), config)
    text = json.dumps([sts, secret])
    for master in (*masters, *pod_auth):
        assert base64.b64encode(master.secret).decode() not in text
        assert master.secret.decode() not in text
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations[BACKUP_KEY_NAMES] == "2026-12,2026-06"  # a rotation rolls the pod
    with pytest.raises(ConfigError, match="BACKUP_MASTER_KEYS is required"):
        OperatorConfig.from_env({})
    with pytest.raises(ConfigError, match=r"POD_AUTH_MASTER_KEYS \(or .*\) is required"):
        OperatorConfig.from_env({"BACKUP_MASTER_KEYS": TEST_MASTERS.to_text()})
    with pytest.raises(ConfigError, match="at least 32 are required") as error:
        OperatorConfig.from_env({"BACKUP_MASTER_KEYS": "k:c2hvcnQ="})
    assert "c2hvcnQ" not in str(error.value)


def test_a_scrape_token_reaches_every_pod_through_its_secret() -> None:
    config = OperatorConfig.from_env({**MASTERS_ENV, "METRICS_TOKENS": "prom:" + "s" * 20})
    secret = keys_secret(spec(), "ns", config)
    assert base64.b64decode(secret["data"]["METRICS_TOKENS"]).decode() == "prom:" + "s" * 20
    path = env_of(rendered(spec(), config))["METRICS_TOKENS_FILE"]
    assert path == "/etc/whatsapp-session/keys/METRICS_TOKENS"
    with pytest.raises(ConfigError, match="token 'prom' is shorter than 16") as error:
        OperatorConfig.from_env({**MASTERS_ENV, "METRICS_TOKENS": "prom:short-one"})
    assert "short-one" not in str(error.value)


def test_a_pod_gets_its_locations_link_key_to_sign_its_own_links_only() -> None:
    """With the link masters, each pod's Secret holds its location's link key (the `qr`
    webhook's link page URL): the router accepts its links for that location only."""
    link_masters = KeyRing((NamedKey("links-1", b"l" * 32),))
    config = OperatorConfig.from_env({**MASTERS_ENV, "LINK_MASTER_KEYS": link_masters.to_text()})
    secret = keys_secret(spec(), "ns", config)
    keys = parse_ring(base64.b64decode(secret["data"]["LINK_KEYS"]).decode())
    grant = LinkGrant("13", "Location 13", 2**31)
    assert verify(link_masters, sign(keys, grant), 0) == grant
    forged = sign(keys, LinkGrant("14", "Location 14", 2**31))  # another location: refused
    with pytest.raises(InvalidLinkToken, match="forged"):
        verify(link_masters, forged, 0)
    sts = rendered(spec(), config)
    assert env_of(sts)["LINK_KEYS_FILE"] == "/etc/whatsapp-session/keys/LINK_KEYS"
    assert base64.b64encode(b"l" * 32).decode() not in json.dumps([sts, secret])
    plain = OperatorConfig.from_env(MASTERS_ENV)  # no link masters: no link key, no file
    assert "LINK_KEYS" not in keys_secret(spec(), "ns", plain)["data"]
    assert "LINK_KEYS_FILE" not in env_of(rendered(spec(), plain))


def test_the_service_is_headless_and_selects_the_pod() -> None:
    config = OperatorConfig(backup_masters=TEST_MASTERS)
    svc, sts = service(spec(), "ns", config), rendered(spec(), config)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]


def test_operator_config_rejects_a_malformed_pod_environment() -> None:
    with pytest.raises(ConfigError, match="SESSION_POD_ENV"):
        OperatorConfig.from_env({**MASTERS_ENV, "SESSION_POD_ENV": '{"A": 1}'})
    assert OperatorConfig.from_env({**MASTERS_ENV, "SESSION_POD_ENV": '{"A": "1"}'}).pod_env == {
        "A": "1"
    }


def test_the_operators_session_defaults_fill_what_a_spec_leaves_out() -> None:
    config = OperatorConfig.from_env(
        {
            **MASTERS_ENV,
            "SESSION_DEFAULTS": '{"storage": {"size": "5Gi", "storageClassName": "fast"},'
            ' "backup": {"intervalSeconds": 300}}',
        }
    )
    own = {"locationId": "13", "storage": {"size": "2Gi"}}
    effective = with_defaults(config.session_defaults, own)
    assert effective["storage"] == {"size": "2Gi", "storageClassName": "fast"}
    sts = rendered(effective, config)
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "2Gi"
    assert claim["storageClassName"] == "fast"
    assert env_of(sts)["BACKUP_INTERVAL_SECONDS"] == "300"
    with pytest.raises(ConfigError, match="SESSION_DEFAULTS"):
        OperatorConfig.from_env({**MASTERS_ENV, "SESSION_DEFAULTS": "[1]"})


def test_the_location_id_rule_is_the_crds() -> None:
    crd = yaml.safe_load((REPO / "crds/whatsappsessions.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    location = schema["properties"]["spec"]["properties"]["locationId"]
    assert location["pattern"] == LOCATION_ID_PATTERN
    assert location["maxLength"] == LOCATION_ID_MAX
    assert valid_location_id("13") and valid_location_id("shop.1_a-b")
    assert valid_location_id("x" * LOCATION_ID_MAX)
    assert not valid_location_id("x" * (LOCATION_ID_MAX + 1))
    assert not valid_location_id("no spaces") and not valid_location_id("-13")
