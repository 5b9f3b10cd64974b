"""sealer's HA registry VIP on a lab node, imitated without IPVS.

What sealer does (HA, its default): nodes map ``sea.hub`` to the VIP (``10.103.97.2``, or the
cluster env ``IPvsVIPv4``: pkg/registry/local.go@v0.11.0:512-526, common/common.go@v0.11.0:117),
whose port is the registry's; on every node ``seautil ipvs --vs VIP:PORT --rs M:PORT ...
--health-path / --health-schem https --run-once`` creates an IPVS virtual server (scheduler
``rr``) with every master's registry as a real server, and the static pod ``reg-lvscare``
(``/usr/bin/lvscare care`` with the same flags, image ``sea.hub:5000/sealerio/lvscare:v1.1.3-beta.8``,
pkg/ipvs/ipvs.go@v0.11.0:32-66) keeps it: every ``--interval`` (5 s) it GETs
``https://<master>:PORT/`` (TLS unverified; any HTTP answer is healthy), removes a real server
that fails and adds it back when it answers again (local.go@v0.11.0:148-224; vendored
github.com/labring/lvscare care/care.go, service/service.go, utils/utils.go@v0.11.0). lvscare adds
no address for the VIP (the vendored code has no dummy link): IPVS takes the node's own
connections in LOCAL_OUT, after the route lookup sent them towards the default route.

The lab (``ensure``), in the node's network namespace:
- a host route ``VIP/32 dev eth0 src <node ip>`` standing for the default route lab hosts lack
  (the node's connections leave with its own address, as on sealer's nodes; no SNAT needed);
- nft table ``ip sealer_reg_vip``: ``VIP:PORT`` DNAT'ed (``numgen inc``, round robin) to the
  healthy masters, set ``healthy`` listing them; the table is replaced whole in one transaction;
  with no healthy master a connect is refused (IPVS refuses a service with no real server);
- service ``reg-lvscare`` (``Lab.start_service``: survives like containerd, restarted by a revive
  after a crash) running lab/reg-lvscare.sh, copied to the node's ``/etc/reg-lvscare/``.
  ``ensure`` first writes the table with every master, as ``seautil ipvs --run-once`` does, and
  the checker starts with every master in rotation, as lvscare's ``createVsAndRs`` does.
- the checker does what lvscare's loop does (vendored github.com/labring/lvscare
  ``care/care.go``, ``service/service.go`` ``CheckRealServers``, ``utils/utils.go``
  ``IsHTTPAPIHealth`` in sealerio/sealer@v0.11.0): a ``time.Ticker`` of ``interval``; each tick
  probes the masters one after the other, in the ``--rs`` order, with ``http.Get`` on Go's
  ``http.DefaultTransport`` (dial bounded by 30 s, TLS handshake by 10 s, no overall limit) and
  deletes a master's real server right after its failed probe (``DeleteRealServer``, not a weight
  of 0), adding it back after a good one. A master whose packets are dropped (the lab's ``kill``,
  a partition) therefore leaves the rotation 30 s after the first tick that follows its death:
  30–35 s after it with the default 5 s interval; a tick that comes during a round waits (Go
  buffers one), so the next round starts at once. ``timeout`` is that dial bound (curl's
  ``--connect-timeout``, which also covers the TLS handshake; TCP keepalive 30 s as Go's dialer
  sets it; no overall bound, as ``http.Get`` has none).

How it differs from IPVS + lvscare:
- existing connections: conntrack keeps a flow NAT'ed to the backend it started on, also after
  the checker dropped that backend; IPVS does the same with its own connection table unless
  ``net.ipv4.vs.expire_nodest_conn`` is set. Either way an open pull to a dead master hangs until
  the client's own timeout; new connections go to the remaining masters.
- checker timing, as above. A master that dies while a probe of it waits for the answer (the
  request sent, the TLS done) holds lvscare's round until TCP keepalive gives up on the
  connection: 30 s idle + 9 probes 30 s apart, about 5 min, during which the dead master stays in
  rotation; the lab's curl does the same. (One run, with an overall bound of 40 s on the probe
  then, dropped a killed master 40.0 s after the kill: most likely that case.) A TLS stall: curl waits up to ``timeout`` (30 s), Go 10 s.
  Before 2026-12-06 the lab probed the masters in parallel, bounded by 10 s, and dropped a killed
  master 10–15 s after the kill: kinder than lvscare by about 20 s.
- IPVS's ``net.ipv4.vs.expire_nodest_conn``: sealer's kube-proxy runs in IPVS mode
  (pkg/runtime/kubernetes/kubeadm/common.go@v0.11.0:91-96, the VIP in ``excludeCIDRs``) and
  kube-proxy sets that sysctl to 1 (kubernetes pkg/proxy/ipvs/proxier.go,
  ``sysctlExpireNoDestConn``): once lvscare deleted a real server, the kernel expires its
  connections and a later SYN retransmission of one still connecting is scheduled again, to a live
  master. The lab does not model it: such a connection keeps going to the dead master until the
  client's own timeout (harsher than a node with kube-proxy, never kinder). It matters only for a
  connection opened less than the client's dial bound before lvscare's removal (30–35 s after the
  death): docker's first request gives up at 15 s, containerd 1.6's dial at 30 s.
- nothing to inspect with ``ipvsadm``: ``status()`` reads set ``healthy``; ``nft list table ip
  sealer_reg_vip`` in the node shows the rule. Scheduler, weights (lvscare: 1 each) and
  persistence are not modelled beyond round robin.
- the VIP must lie in 198.18.0.0/15 (the only network the lab may use): ``VIP`` is
  ``198.19.<instance>.2``, which a real cluster would set through ``IPvsVIPv4``.
"""
from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lab.hosts import INSTANCE, Lab

VIP = f"198.19.{INSTANCE}.2"
SERVICE = "reg-lvscare"
TABLE = "sealer_reg_vip"
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")
SCRIPT = Path(__file__).resolve().parent / "reg-lvscare.sh"
HOST_SCRIPT = "/etc/reg-lvscare/reg-lvscare.sh"
LVSCARE_INTERVAL_S = 5     # lvscare's --interval default (vendored cmd/seautil/cmd/ipvs.go@v0.11.0)
DEFAULT_TIMEOUT_S = 30     # Go's dial timeout in http.DefaultTransport, what lvscare's probe uses


class VipSpec(BaseModel):
    """What ``ensure`` is asked for, checked before anything on the node changes."""

    model_config = ConfigDict(extra="forbid")
    vip: ipaddress.IPv4Address
    port: int = Field(ge=1, le=65535)
    masters: list[ipaddress.IPv4Address] = Field(min_length=1)
    interval: float = Field(gt=0, le=300)
    timeout: float = Field(gt=0, le=300)

    @field_validator("vip")
    @classmethod
    def _in_lab_network(cls, v: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        if v not in LAB_NETWORK:
            raise ValueError(f"vip {v} is outside {LAB_NETWORK}, the only network the lab may use "
                             f"(sealer's default 10.103.97.2 is not allowed here: set e.g. {VIP})")
        return v

    @field_validator("masters")
    @classmethod
    def _distinct(cls, v: list[ipaddress.IPv4Address]) -> list[ipaddress.IPv4Address]:
        if len(set(v)) != len(v):
            raise ValueError(f"masters lists an address twice: {[str(m) for m in v]}")
        return v


def _spec(vip, port, masters, interval, timeout) -> VipSpec:
    try:
        return VipSpec(vip=vip, port=port, masters=list(masters), interval=interval,
                       timeout=timeout)
    except ValidationError as e:
        raise ValueError(f"lab.vip.ensure: {e}") from e


def _argv(spec: VipSpec) -> list[str]:
    return ["/bin/bash", HOST_SCRIPT, "care", TABLE, str(spec.vip), str(spec.port),
            f"{spec.interval:g}", f"{spec.timeout:g}", *(str(m) for m in spec.masters)]


def _recorded_argv(lab: Lab, node: str) -> list[str] | None:
    h = lab.host(node)
    try:
        return json.loads((lab.hosts_dir / h.name / "services" / f"{SERVICE}.json")
                          .read_text())["argv"]
    except (OSError, ValueError, KeyError):
        return None


def _route_ok(lab: Lab, node: str, vip: str, src: str) -> bool:
    words = lab.run(node, f"ip -4 route show {vip}/32").stdout.split()
    return words[:3] == [vip, "dev", "eth0"] and words[-2:] == ["src", src]


def ensure(lab: Lab, node: str, vip: str, port: int, masters: list[str], *,
           interval: float = LVSCARE_INTERVAL_S, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """The node reaches ``vip:port`` through a DNAT to the healthy ``masters`` (their ``:port``),
    kept by the ``reg-lvscare`` checker. Idempotent: True when something changed (a changed
    spec restarts the checker, after writing the table with every master)."""
    spec = _spec(vip, port, masters, interval, timeout)
    h = lab.host(node)
    script = SCRIPT.read_text()
    target = lab.host_path(node, HOST_SCRIPT)
    route = f"{spec.vip} dev eth0 src {h.ip}"
    argv = _argv(spec)
    same = (target.exists() and target.read_text() == script and _recorded_argv(lab, node) == argv
            and lab.service_pid(node, SERVICE) is not None
            and _route_ok(lab, node, str(spec.vip), h.ip)
            and lab.run(node, f"nft list table ip {TABLE}", check=False).returncode == 0)
    if same:
        return False
    lab.stop_service(node, SERVICE)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script)
    target.chmod(0o755)
    q = shlex.quote
    lab.run(node, f"ip route replace {route} && bash {q(HOST_SCRIPT)} apply {TABLE} {spec.vip} "
                  f"{spec.port} " + " ".join(str(m) for m in spec.masters))
    lab.start_service(node, SERVICE, argv)
    return True


def status(lab: Lab, node: str) -> dict[str, bool]:
    """``{master_ip: in rotation}`` for every master the node's checker cares for; {} when the
    node has no VIP."""
    argv = _recorded_argv(lab, node)
    if not argv:
        return {}
    masters = argv[8:]
    done = lab.run(node, f"nft -j list set ip {TABLE} healthy", check=False)
    if done.returncode != 0:
        return {m: False for m in masters}
    healthy: set[str] = set()
    for item in json.loads(done.stdout)["nftables"]:
        if "set" in item:
            healthy.update(e for e in item["set"].get("elem", []) if isinstance(e, str))
    return {m: m in healthy for m in masters}


def remove(lab: Lab, node: str) -> bool:
    """No VIP on the node any more: checker stopped and forgotten, table, route and script gone.
    True if there was something to remove."""
    argv = _recorded_argv(lab, node)
    had = lab.stop_service(node, SERVICE, forget=True) or argv is not None
    vip = argv[4] if argv else None
    if lab.run(node, f"nft list table ip {TABLE}", check=False).returncode == 0:
        lab.run(node, f"nft delete table ip {TABLE}")
        had = True
    if vip and lab.run(node, f"ip -4 route show {vip}/32").stdout.strip():
        lab.run(node, f"ip route del {vip}/32")
        had = True
    script = lab.host_path(node, HOST_SCRIPT)
    if script.exists():
        script.unlink()
    return had


def checker_log(lab: Lab, node: str) -> str:
    """What the checker logged on the node (each change of the healthy set, with its time)."""
    log = lab.service_log(node, SERVICE)
    return log.read_text(errors="replace") if log.exists() else ""


def kill_between_probes(lab: Lab, master: str, ip: str, port: int, limit_s: float = 10) -> None:
    """``lab.kill(master)`` at a moment no node's checker has a probe of ``ip:port`` in flight.
    A master that dies while a probe waits for its answer stays in rotation until TCP keepalive
    gives up (about 5 min, in lvscare as in the lab: see the module's docstring); tests that
    time the common case, a death between probes, kill through this. (No PID namespace in the
    lab: pgrep sees every host's curl; the address names this lab instance's master.)"""
    deadline = time.monotonic() + limit_s
    while subprocess.run(["pgrep", "-f", f"https://{ip}:{port}/"],
                         capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"a probe of {ip}:{port} still in flight after {limit_s}s")
        time.sleep(0.01)
    lab.kill(master)
