"""Hosts behind home routers, built from Linux network namespaces for tests and benches.

`Internet` builds a "public" namespace (a bridge every router and public host plugs into)
and any number of homes: a router namespace with a WAN leg on the bridge and a LAN leg to
one home host namespace, NAT between them done by nftables:

- ``full-cone``: endpoint-independent mapping (source ports kept) and endpoint-independent
  filtering (whatever reaches the router's port is forwarded to the home host);
- ``restricted``: Linux's plain masquerade, port-preserving where it can, replies only;
- ``symmetric``: masquerade with random ports, so each destination sees another mapping:
  hole punching fails and a TURN relay is the only way in.

A host without NAT is a public host (`add_public_host`).

Everything lives in namespaces this process creates (named with its pid) and is removed by
`close`; nothing touches the host's own interfaces or any address outside the ones here.
Needs root, `ip` (iproute2) and, for NAT, `nft` (nftables).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Self

NAT_KINDS = ("full-cone", "restricted", "symmetric")
PUBLIC_NET = "10.77.0"  # the "internet": 10.77.0.0/24
PUBLIC_ROUTER = f"{PUBLIC_NET}.254"  # the bridge's own address in the public namespace


class NetnsError(RuntimeError):
    """A namespace, link or NAT rule could not be made (not root, no ip or nft)."""


def _run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(args, check=False, capture_output=True, text=True, input=stdin,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(args)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def available() -> str | None:
    """None when namespaces can be built here, else why not (one line)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = f"cdcprobe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def nat_available() -> str | None:
    """None when nftables NAT works inside a namespace here, else why not."""
    why = available()
    if why is not None:
        return why
    if shutil.which("nft") is None:
        return "nftables ('nft') is not installed"
    probe = f"cdcnat{os.getpid()}"
    _run("ip", "netns", "add", probe)
    try:
        _run("ip", "netns", "exec", probe, "nft", "-f", "-",
             stdin="table ip nat {\n chain post {\n type nat hook postrouting priority 100;\n }\n}\n")
    except NetnsError as exc:
        return f"this kernel cannot do nftables NAT in a namespace: {exc}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Home:
    """One home network: a host behind a router."""

    name: str
    nat: str
    host_ns: str  # where the home's processes run
    router_ns: str
    host_ip: str  # the host's LAN address
    wan_ip: str  # the router's public address: what the internet sees


@dataclass
class Internet:
    """The public network plus homes; use as a context manager (or call `close`)."""

    tag: str = field(default_factory=lambda: f"cdc{os.getpid() % 100000}")
    homes: dict[str, Home] = field(default_factory=dict)
    public_hosts: dict[str, str] = field(default_factory=dict)  # name -> public address
    _namespaces: list[str] = field(default_factory=list)

    @property
    def public_ns(self) -> str:
        return f"{self.tag}-pub"

    def __enter__(self) -> Self:
        self._netns(self.public_ns)
        ns = self.public_ns
        _run("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", ns, "addr", "add", f"{PUBLIC_ROUTER}/24", "dev", "br0")
        _run("ip", "-n", ns, "link", "set", "br0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        # The rest of the internet: whatever is not on the bridge is silently lost.
        _run("ip", "-n", ns, "route", "add", "blackhole", "default")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every namespace made here (their links and rules go with them)."""
        for ns in reversed(self._namespaces):
            _run("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()

    def _netns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _plug(self, ns: str, ifname: str, address: str) -> None:
        """A veth from `ns` (as `ifname`, at `address`/24) to the public bridge."""
        peer = f"{self.tag[:6]}{len(self._namespaces)}{ifname}"[:15]
        _run("ip", "link", "add", ifname + "x", "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", ifname + "x", "netns", ns)
        _run("ip", "-n", ns, "link", "set", ifname + "x", "name", ifname)
        _run("ip", "link", "set", peer, "netns", self.public_ns)
        _run("ip", "-n", self.public_ns, "link", "set", peer, "master", "br0")
        _run("ip", "-n", self.public_ns, "link", "set", peer, "up")
        _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", ifname)
        _run("ip", "-n", ns, "link", "set", ifname, "up")

    def add_public_host(self, name: str) -> str:
        """A host on the public network (a sentinel's machine); returns its namespace."""
        ns = f"{self.tag}-{name}"
        address = f"{PUBLIC_NET}.{1 + len(self.public_hosts)}"
        self._netns(ns)
        self._plug(ns, "eth0", address)
        _run("ip", "-n", ns, "route", "add", "default", "via", PUBLIC_ROUTER)
        self.public_hosts[name] = address
        return ns

    def add_home(self, name: str, nat: str) -> Home:
        """A host behind a router doing `nat` (one of NAT_KINDS)."""
        if nat not in NAT_KINDS:
            raise NetnsError(f"unknown NAT kind {nat!r}: one of {', '.join(NAT_KINDS)}")
        k = len(self.homes) + 1
        router, host = f"{self.tag}-{name}r", f"{self.tag}-{name}"
        wan_ip, lan_net = f"{PUBLIC_NET}.{100 + k}", f"192.168.{70 + k}"
        host_ip = f"{lan_net}.2"
        self._netns(router)
        self._netns(host)
        self._plug(router, "wan", wan_ip)
        _run("ip", "link", "add", "lanx", "type", "veth", "peer", "name", "hostx")
        _run("ip", "link", "set", "lanx", "netns", router)
        _run("ip", "link", "set", "hostx", "netns", host)
        _run("ip", "-n", router, "link", "set", "lanx", "name", "lan")
        _run("ip", "-n", host, "link", "set", "hostx", "name", "eth0")
        _run("ip", "-n", router, "addr", "add", f"{lan_net}.1/24", "dev", "lan")
        _run("ip", "-n", host, "addr", "add", f"{host_ip}/24", "dev", "eth0")
        _run("ip", "-n", router, "link", "set", "lan", "up")
        _run("ip", "-n", host, "link", "set", "eth0", "up")
        _run("ip", "-n", host, "route", "add", "default", "via", f"{lan_net}.1")
        _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Like a real router, its default route is the internet: packets for addresses
        # nobody routes (another home's LAN) leave and are lost there, not refused here.
        _run("ip", "-n", router, "route", "add", "default", "via", PUBLIC_ROUTER)
        _run("ip", "netns", "exec", router, "nft", "-f", "-", stdin=_nat_rules(nat, host_ip))
        home = Home(name, nat, host, router, host_ip, wan_ip)
        self.homes[name] = home
        return home

    def exec_args(self, ns: str) -> list[str]:
        """The command prefix that runs a program inside namespace `ns`."""
        return ["ip", "netns", "exec", ns]


def _nat_rules(nat: str, host_ip: str) -> str:
    """nftables rules of a home router: its WAN leg is `wan`, its LAN leg `lan`."""
    if nat == "symmetric":
        snat = 'oifname "wan" masquerade random'
    else:
        snat = 'oifname "wan" masquerade persistent'
    forward_in = ""
    if nat == "full-cone":
        # Whatever reaches the router's UDP ports goes to the home host on the same port:
        # with source ports kept by the masquerade, any outside peer can reach a mapping.
        forward_in = f'iifname "wan" meta l4proto udp dnat to {host_ip}'
    return f"""
table ip nat {{
    chain pre {{
        type nat hook prerouting priority -100;
        {forward_in}
    }}
    chain post {{
        type nat hook postrouting priority 100;
        {snat}
    }}
}}
"""
