"""A real Kubernetes control plane for tests, without containers: etcd, kube-apiserver and
kube-controller-manager on 127.0.0.1 (what controller-runtime's envtest starts, plus the
controller manager for StatefulSets, garbage collection and ServiceAccounts). There is no
scheduler and no kubelet: pods stay Pending until a test binds them itself.

Binaries come from scripts/control_plane.sh (built once, cached outside the checkout).
Clients authenticate with certificates of a throwaway CA: the admin is in system:masters,
and `kubeconfig_for_service_account` acts as a ServiceAccount, so RBAC is exercised for real.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import REPO, free_port

SCRIPT = REPO / "scripts" / "control_plane.sh"
TOOLS_GO_MOD = REPO / "tools" / "k8s" / "go.mod"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# Names as `kube-controller-manager --help` lists them (v1.34).
CONTROLLERS = (
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",  # the kube-root-ca.crt ConfigMap per namespace
    "namespace-controller",
    "garbage-collector-controller",
    "statefulset-controller",
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "persistentvolumeclaim-protection-controller",  # else deleted PVCs keep their finalizer
)


# The audit log records what ServiceAccounts (the operator, the router) ask, watches aside:
# the tests count an operator's requests there.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "verbs": ["watch"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def _k8s_version() -> str:
    """The k8s.io/kubernetes version that tools/k8s/go.mod pins (e.g. v1.34.5)."""
    for line in TOOLS_GO_MOD.read_text().splitlines():
        words = line.split()
        if words[:1] == ["k8s.io/kubernetes"]:
            return words[1]
    raise RuntimeError(f"k8s.io/kubernetes not required in {TOOLS_GO_MOD}")


K8S_VERSION = _k8s_version()


def control_plane_binaries() -> Path:
    """The directory with etcd, kube-apiserver, kube-controller-manager, kubectl and helm
    (scripts/control_plane.sh builds them the first time: about 5 minutes)."""
    result = subprocess.run([str(SCRIPT)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


class CertificateAuthority:
    """A throwaway CA that writes its certificate and the ones it issues to `directory`."""

    def __init__(self, directory: Path, name: str = "whatsapp-sessions test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            self._builder(self._name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / "ca.crt"
        self.cert_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        file_stem: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server_names: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """A client certificate (CN = user, O = groups), or a serving one when `server_names`
        (DNS names or IP addresses) are given. Returns (certificate file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            self._builder(x509.Name(attributes), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
                critical=False,
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        cert_file = self.directory / f"{file_stem}.crt"
        key_file = self.directory / f"{file_stem}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(private_key_pem(key))
        key_file.chmod(0o600)
        return cert_file, key_file

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _Process:
    """One control-plane binary in its own process group, output in `log_path`."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.name = Path(args[0]).name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager under `root` (certificates, data,
    kubeconfigs and logs: etcd.log, kube-apiserver.log, kube-controller-manager.log)."""

    def __init__(
        self,
        bin_dir: Path,
        root: Path,
        address: str = "127.0.0.1",
        service_cidr: str = SERVICE_CLUSTER_IP_RANGE,
        extra_controllers: tuple[str, ...] = (),
    ) -> None:
        """`address`: where kube-apiserver listens and advertises itself (a real node's pods
        reach it there through the `kubernetes` Service); `extra_controllers` are added to
        CONTROLLERS (a real node needs the node lifecycle and volume binding ones)."""
        self.bin_dir = bin_dir
        self.root = root
        self.address = address
        self.service_cidr = service_cidr
        self.controllers = (*CONTROLLERS, *extra_controllers)
        self.etcd_port = free_port()
        self.port = free_port(address)
        self.server = f"https://{address}:{self.port}"
        self.ca = CertificateAuthority(root / "pki")
        self.admin_kubeconfig = root / "admin.kubeconfig"
        self.audit_log = root / "audit.log"
        self._processes: list[_Process] = []

    @property
    def kubectl_binary(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm_binary(self) -> Path:
        return self.bin_dir / "helm"

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        pki = self.ca.directory
        serving_cert, serving_key = self.ca.issue(
            "kube-apiserver",
            "kube-apiserver",
            server_names=(
                "127.0.0.1",
                "localhost",
                self.address,
                # the `kubernetes` Service's ClusterIP, the first address of the range
                str(next(ipaddress.ip_network(self.service_cidr).hosts())),
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        signing_key = ec.generate_private_key(ec.SECP256R1())
        service_account_key = pki / "service-account.key"
        service_account_key.write_bytes(private_key_pem(signing_key))
        service_account_public_key = pki / "service-account.pub"
        service_account_public_key.write_bytes(
            signing_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        admin_cert = self._write_kubeconfig(self.admin_kubeconfig, "admin", ("system:masters",))
        # How the API server authenticates to a kubelet (kubectl logs, exec).
        kubelet_client = self.ca.issue("kubelet-client", "kube-apiserver", ("system:masters",))

        audit_policy = self.root / "audit-policy.json"
        audit_policy.write_text(json.dumps(AUDIT_POLICY))
        self._start_etcd()
        self._wait(timeout, "etcd to be healthy", self._etcd_healthy)
        self._start(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.port}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={self.ca.cert_file}",
            f"--service-account-issuer={self.server}/",
            f"--service-account-key-file={service_account_public_key}",
            f"--service-account-signing-key-file={service_account_key}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--authorization-mode=RBAC",
            f"--kubelet-client-certificate={kubelet_client[0]}",
            f"--kubelet-client-key={kubelet_client[1]}",
            f"--kubelet-certificate-authority={self.ca.cert_file}",
            "--allow-privileged=true",
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        )
        self._wait(timeout, "kube-apiserver /readyz", lambda: self._ready(admin_cert))
        self._start(
            "kube-controller-manager",
            f"--kubeconfig={self.admin_kubeconfig}",
            "--leader-elect=false",
            f"--controllers={','.join(self.controllers)}",
            f"--service-account-private-key-file={service_account_key}",
            f"--root-ca-file={self.ca.cert_file}",
            "--secure-port=0",  # no /healthz listener: readiness is checked through the API
            # Not the default 20/s: thousands of StatefulSets' pods (the operator benchmark)
            # would take minutes to be created.
            "--kube-api-qps=300",
            "--kube-api-burst=600",
        )
        # The ServiceAccount admission plugin refuses pods until this exists.
        self._wait(
            timeout,
            "the serviceaccount controller to create default/default",
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        )

    def stop(self) -> None:
        """Stops the controller manager, the API server and etcd, in that order."""
        while self._processes:
            self._processes.pop().stop()

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl as the admin (or as the user of `kubeconfig`); with `check`, a
        non-zero exit raises with kubectl's stderr in the message."""
        result = subprocess.run(
            [
                str(self.kubectl_binary),
                f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
                f"--cache-dir={self.root / 'kubectl-cache'}",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited with {result.returncode}: {result.stderr}"
            )
        return result

    def install_crds(self, *files: Path) -> None:
        """Applies CRDs and waits until the API server serves their resources."""
        for crd in files:
            self.kubectl("apply", "-f", str(crd))
            self.kubectl("wait", "--for=condition=Established", "-f", str(crd))

    def kubeconfig_for_service_account(self, namespace: str, name: str) -> Path:
        """A kubeconfig whose client certificate authenticates as that ServiceAccount."""
        path = self.root / f"sa_{namespace}_{name}.kubeconfig"  # "_" is in no k8s name
        self._write_kubeconfig(
            path,
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
        )
        return path

    def kubeconfig_for_user(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig whose client certificate says CN=`user`, O=`groups`."""
        path = self.root / f"user_{user.replace(':', '_')}.kubeconfig"
        self._write_kubeconfig(path, user, groups)
        return path

    def audit_events(self, user: str) -> list[dict[str, Any]]:
        """Every request but watches that `user` (a ServiceAccount) has made, as the API
        server's audit log records them (verb, objectRef, requestReceivedTimestamp...)."""
        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text().splitlines()
        events = (json.loads(line) for line in lines if line.strip())
        return [e for e in events if e.get("user", {}).get("username") == user]

    def env(self) -> dict[str, str]:
        """Environment for a client program acting as the admin."""
        return {"KUBECONFIG": str(self.admin_kubeconfig)}

    def _write_kubeconfig(
        self, path: Path, user: str, groups: tuple[str, ...]
    ) -> tuple[Path, Path]:
        """Writes a kubeconfig with a new client certificate; returns (cert, key) files."""
        cert_file, key_file = self.ca.issue(path.stem, user, groups)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca.cert_file),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(cert_file),
                        "client-key-data": _b64(key_file),
                    },
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is valid kubeconfig YAML
        path.chmod(0o600)
        return cert_file, key_file

    def _start_etcd(self) -> None:
        peer_url = f"http://127.0.0.1:{free_port()}"
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        self._start(
            "etcd",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )

    def _start(self, binary: str, *args: str) -> None:
        process = _Process([str(self.bin_dir / binary), *args], self.root / f"{binary}.log")
        self._processes.append(process)

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.etcd_port}/health"
        return requests.get(url, timeout=2).json().get("health") == "true"

    def _ready(self, admin_cert: tuple[Path, Path]) -> bool:
        response = requests.get(
            f"{self.server}/readyz", cert=admin_cert, verify=self.ca.cert_file, timeout=5
        )
        return response.status_code == 200

    def _wait(self, timeout: float, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            for process in self._processes:
                process.check_alive()
            try:
                if check():
                    return
            except (requests.RequestException, OSError, ValueError) as exc:
                error = exc
            time.sleep(0.1)
        logs = "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p in self._processes)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what} ({error})\n{logs}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def statefulset_manifest(name: str, container: dict[str, Any], **pod_spec: Any) -> dict[str, Any]:
    """A one-replica StatefulSet of `container` with a 1Gi volume claim named `data`."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], **pod_spec},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
