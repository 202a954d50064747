"""The host side of the real test node's network: a Linux bridge on a subnet of the tests' own,
a route that keeps the Service range on that bridge, an nftables table that stops anything
from the bridge reaching another interface (pods have no way out of the machine), and the
sysctls the node needs or changes. `setup` records what it will change in a state file first,
and `teardown` puts every value back; a run killed in between is undone by the next `setup`
(or by hand: `python3 -m tests.support.node_leftovers`)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "wa-test0"
POD_CIDR = "10.203.0.0/24"
GATEWAY = "10.203.0.1"
SERVICE_CIDR = "10.203.1.0/24"
NFT_TABLE = "wa_test_node"
# Set by the node or by us (ip_forward), read before and written back after.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",  # kube-proxy
    "vm.overcommit_memory",  # kubelet
    "kernel.panic",  # kubelet
    "kernel.panic_on_oops",  # kubelet
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",  # kube-proxy
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.bridge.bridge-nf-call-iptables",
)
STATE_FILE = Path(os.environ.get("WA_TOOLS_CACHE", Path.home() / ".cache/whatsapp-sessions"))
STATE_FILE = STATE_FILE / "node-network-state.json"

# Pods may talk to each other and to the host's bridge address, never past the bridge.
NFT_RULES = f"""
table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{BRIDGE}" oifname != "{BRIDGE}" drop
    oifname "{BRIDGE}" iifname != "{BRIDGE}" drop
  }}
}}
"""


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    return {
        name: _sysctl_path(name).read_text().strip()
        for name in SYSCTLS
        if _sysctl_path(name).exists()
    }


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def nft_tables() -> list[str]:
    """["ip nat", "inet wa_test_node", ...]"""
    listed = _run("nft", "list", "tables", check=False).stdout.splitlines()
    return [line.removeprefix("table ").strip() for line in listed if line.startswith("table ")]


def _nft_table_empty(table: str) -> bool:
    """No rule, set or map in it: only (base) chains."""
    listed = _run("nft", "list", "table", *table.split(), check=False).stdout.splitlines()
    body = [line.strip() for line in listed[1:]]
    allowed = ("chain ", "type ", "}", "")
    return all(line.startswith(allowed) for line in body)


def remove_kube_iptables() -> None:
    """Every KUBE-* chain of the kubelet and kube-proxy, and every rule that jumps to one, in
    iptables and ip6tables (kube-proxy --cleanup leaves the kubelet's)."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            saved = _run(f"{tool}-save", "-t", table, check=False).stdout.splitlines()
            for line in saved:
                words = line.split()
                if line.startswith("-A ") and "-j" in words:
                    target = words[words.index("-j") + 1]
                    if target.startswith("KUBE-") and not words[1].startswith("KUBE-"):
                        _run(tool, "-t", table, "-D", *shlex.split(line)[1:], check=False)
            chains = [line[1:].split()[0] for line in saved if line.startswith(":KUBE-")]
            for chain in chains:
                _run(tool, "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(tool, "-t", table, "-X", chain, check=False)


@dataclass
class NodeNetwork:
    bridge: str = BRIDGE
    gateway: str = GATEWAY
    pod_cidr: str = POD_CIDR
    service_cidr: str = SERVICE_CIDR
    state_file: Path = STATE_FILE

    def setup(self) -> None:
        """Call under node_leftovers.node_lock: one bridge, one node per machine."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self._undo()  # whatever a run killed before its teardown left
        state = {"sysctls": read_sysctls(), "nft_tables": nft_tables()}
        self.state_file.write_text(json.dumps(state))
        prefix = self.pod_cidr.split("/")[1]
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # A ClusterIP that kube-proxy does not (yet) translate stays on the bridge.
        _run("ip", "route", "add", self.service_cidr, "dev", self.bridge)
        subprocess.run(["nft", "-f", "-"], input=NFT_RULES, text=True, check=True)
        _sysctl_path("net.ipv4.ip_forward").write_text("1")  # pod -> ClusterIP -> pod
        # Pod -> pod on the bridge through iptables: kube-router's NetworkPolicy rules see it.
        _sysctl_path("net.bridge.bridge-nf-call-iptables").write_text("1")

    def teardown(self) -> list[str]:
        """Undoes `setup` and whatever the node changed; returns what was restored."""
        return self._undo()

    def _undo(self) -> list[str]:
        restored: list[str] = []
        _run("nft", "delete", "table", "inet", NFT_TABLE, check=False)
        _run("ip", "route", "del", self.service_cidr, "dev", self.bridge, check=False)
        _run("ip", "link", "del", self.bridge, check=False)
        remove_kube_iptables()
        for ipset in _run("ipset", "list", "-n", check=False).stdout.split():
            if ipset.startswith("KUBE-"):  # kube-router's
                _run("ipset", "destroy", ipset, check=False)
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            for table in set(nft_tables()) - set(state["nft_tables"]):
                if _nft_table_empty(table):  # made by iptables-nft for the kubelet's chains
                    _run("nft", "delete", "table", *table.split(), check=False)
                    restored.append(f"nft table {table} removed")
            saved = state["sysctls"]
            now = read_sysctls()
            for name, value in saved.items():
                if now.get(name) != value:
                    _sysctl_path(name).write_text(value)
                    restored.append(f"{name}={value} (was {now.get(name)})")
            self.state_file.unlink()
        return restored
