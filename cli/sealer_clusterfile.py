"""sealer's own state after a recovery: its Clusterfile must name the new master0 first.

sealer takes master0 to be the first IP of the hosts with role `master`, in the order of
`spec.hosts` (`GetMaster0IP`: types/api/v2/cluster_types.go@v0.11.0:161-181, the same function
at @v0.8.7:96-116). Its later `scale-up` writes `<masters[0]> sea.hub` on new hosts, `sealer run
<app>` copies data to and launches on masters[0], `sealer delete` refuses masters[0]
(see ../shared/notes/sealer-compat.md). So once `recover`/`watch` moved the registry, the
Clusterfile sealer reads must list the new master0 first, or sealer's next command undoes the
recovery. It reads the ConfigMap `kube-system/sealer-clusterfile` key `Clusterfile` first
(pkg/clusterfile/clusterfile.go@v0.11.0:39-43,231-291), else `~/.sealer/Clusterfile` (v0.8:
`~/.sealer/<name>/Clusterfile`, no ConfigMap).

Nothing else in those documents may change, so the text is edited, never re-marshalled:
``master0_first`` finds the nodes with PyYAML's composer (which keeps each node's position) and
moves spans of the original text; every byte outside the moved spans stays where it was.

- One hosts entry with every master IP (sealer v0.11's shape): the new master0's IP moves to the
  front of that entry's `ips`, the others keep their order.
- One entry per IP (v0.8's `getHosts`, apply/run.go@v0.8.7:97-155; v0.11 when a host has its own
  `ssh`): the new master0's whole entry (its `ssh`, `env`, labels with it) moves before the first
  master entry, the others keep their order.
- v0.8 writes roles `[master, master0]` on the first master's entry. v0.8.7 never derives master0
  from that role (GetMaster0IP reads role `master` only; plugins' `on: master0` take the first
  master: pkg/plugin/utils.go@v0.8.7:53-58), but `sealer exec --roles master0` runs on the hosts
  carrying it (pkg/exec/exec.go@v0.8.7:49-57), so a label left on the dead host would send that
  command there. The label therefore follows master0: the two entries' `roles` values trade
  places (both entries stay as sealer wrote them otherwise). When the two role lists differ by
  more than `master0`, that trade would move other roles too and the file is refused.
  v0.10/v0.11 have no `master0` role.

The I/O around it (``update``) is the CLI's, after `up` verified the recovery: see
docs/how-it-works.md ("sealer's Clusterfile after a recovery") for why it is not a Pulumi step.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cli.clusterfile import ClusterfileError

CONFIGMAP_PATH = "/api/v1/namespaces/kube-system/configmaps/sealer-clusterfile"
CONFIGMAP_KEY = "Clusterfile"
API_TIMEOUT_S = 5.0
PUT_ATTEMPTS = 3


# -- the pure transform -----------------------------------------------------------------------------

def _get(node: Node, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return v
    return None


def _end(node: Node) -> int:
    """Where the node's own text ends: a block collection's end mark lies past the newline and
    the next line's indentation, so take its last descendant's end."""
    if isinstance(node, ScalarNode) or node.flow_style:
        return node.end_mark.index
    children = [c for pair in node.value for c in pair] if isinstance(node, MappingNode) else node.value
    return max((_end(c) for c in children), default=node.end_mark.index)


def _span(node: Node) -> tuple[int, int]:
    return node.start_mark.index, _end(node)


def _rearrange(text: str, spans: list[tuple[int, int]], order: list[int]) -> str:
    """``text`` with the contents of ``spans`` (ascending, disjoint) put in ``order``; the text
    between them stays in place."""
    out, pos = [], 0
    for (start, end), source in zip(spans, order):
        out.append(text[pos:start])
        out.append(text[spans[source][0]:spans[source][1]])
        pos = end
    return "".join(out) + text[pos:]


def _norm_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip()


def _scalars(node: Node | None, where: str) -> list[ScalarNode]:
    if node is None or (isinstance(node, ScalarNode) and node.value in ("", "null", "~")):
        return []
    if not isinstance(node, SequenceNode) or not all(isinstance(n, ScalarNode) for n in node.value):
        raise ClusterfileError(f"{where} is not a list of strings")
    return list(node.value)


@dataclass
class _Entry:
    index: int
    node: MappingNode
    ips: list[ScalarNode]
    roles: list[ScalarNode]

    @property
    def role_names(self) -> list[str]:
        return [r.value for r in self.roles]


def _cluster_hosts(text: str) -> list[_Entry]:
    try:
        docs = list(yaml.compose_all(text))
    except yaml.YAMLError as e:
        raise ClusterfileError(f"is not valid YAML: {str(e).splitlines()[0]}") from None
    clusters = [d for d in docs if isinstance(_get(d, "kind"), ScalarNode)
                and _get(d, "kind").value == "Cluster"]
    if len(clusters) != 1:
        raise ClusterfileError(f"has {len(clusters)} `kind: Cluster` documents, expected one")
    hosts = _get(_get(clusters[0], "spec"), "hosts")
    if not isinstance(hosts, SequenceNode) or not hosts.value:
        raise ClusterfileError("spec.hosts lists no hosts")
    entries = []
    for i, node in enumerate(hosts.value):
        if not isinstance(node, MappingNode):
            raise ClusterfileError(f"spec.hosts[{i}] is not a mapping")
        entries.append(_Entry(i, node, _scalars(_get(node, "ips"), f"spec.hosts[{i}].ips"),
                              _scalars(_get(node, "roles"), f"spec.hosts[{i}].roles")))
    return entries


def masters_of(text: str) -> list[str]:
    """sealer's master list of a Clusterfile (GetIPSByRole("master")), IPs normalised."""
    return [_norm_ip(ip.value) for e in _cluster_hosts(text) if "master" in e.role_names
            for ip in e.ips]


def master0_first(text: str, master0: str) -> str:
    """``text`` with ``master0`` made sealer's master0 (first IP of the masters) by moving spans of
    the text only; ``text`` itself when it already is. ClusterfileError when the Clusterfile's
    masters do not include ``master0`` or the move cannot be made without changing more."""
    master0 = _norm_ip(master0)
    entries = [e for e in _cluster_hosts(text) if "master" in e.role_names and e.ips]
    masters = [_norm_ip(ip.value) for e in entries for ip in e.ips]
    if not masters:
        raise ClusterfileError("spec.hosts has no host with role master")
    if master0 not in masters:
        raise ClusterfileError(f"its masters ({', '.join(masters)}) do not include the new "
                               f"master0 {master0}: it is not this cluster's Clusterfile, or "
                               "sealer was told of other hosts; nothing was changed")
    if masters[0] == master0:
        return text
    first = entries[0]
    new = next(e for e in entries if master0 in map(_norm_ip, (ip.value for ip in e.ips)))

    def ips_front(entry: _Entry) -> tuple[list[tuple[int, int]], list[int]]:
        values = [_norm_ip(ip.value) for ip in entry.ips]
        k = values.index(master0)
        return [_span(ip) for ip in entry.ips], [k, *range(k), *range(k + 1, len(values))]

    if new is first:
        return _rearrange(text, *ips_front(first))

    # Move ``new``'s entry before ``first``'s; every hosts entry between them shifts by one.
    moved = new.index - first.index
    order = [moved, *range(moved)]
    # master0 not first inside its own entry (an entry with several IPs): front it there too.
    inner = ips_front(new) if _norm_ip(new.ips[0].value) != master0 else None
    roles_swap = ("master0" in first.role_names and "master0" not in new.role_names)
    if roles_swap:
        if set(first.role_names) - {"master0"} != set(new.role_names):
            raise ClusterfileError(
                f"spec.hosts[{first.index}] (roles {first.role_names}) carries sealer v0.8's "
                f"`master0` role and spec.hosts[{new.index}] (roles {new.role_names}) differs from it "
                "by more than that role: the label cannot follow the new master0 without changing "
                "other roles; nothing was changed")
    # Do the edits inside the moved entries first, on a copy whose spans are re-read: each edit
    # keeps the text's structure, so composing again finds the same entries.
    if roles_swap:
        a, b = _get(first.node, "roles"), _get(new.node, "roles")
        text = _rearrange(text, [_span(a), _span(b)], [1, 0])
    if inner is not None:
        entry = _cluster_hosts(text)[new.index]
        text = _rearrange(text, *ips_front(entry))
    hosts = _cluster_hosts(text)
    spans = [_span(e.node) for e in hosts[first.index:new.index + 1]]
    return _rearrange(text, spans, order)


# -- the I/O after a verified recovery -----------------------------------------------------------------

@dataclass
class Outcome:
    """What happened to one document: ``state`` is updated | unchanged | absent | failed."""

    where: str
    state: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.where}: {self.state}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.state != "failed" for o in self.outcomes)

    def as_json(self) -> list[dict]:
        return [{"where": o.where, "state": o.state, "detail": o.detail} for o in self.outcomes]


def _request(endpoint: str, creds, method: str, body: bytes | None = None) -> tuple[int, bytes]:
    url = urlsplit(endpoint)
    raw = socket.create_connection((url.hostname or "", url.port or 443), timeout=API_TIMEOUT_S)
    tls = creds.context.wrap_socket(raw, server_hostname=creds.server_name or url.hostname)
    conn = http.client.HTTPConnection(url.hostname or "", url.port or 443, timeout=API_TIMEOUT_S)
    conn.sock = tls
    try:
        headers = {"Accept": "application/json", **creds.headers}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, f"{url.path.rstrip('/')}{CONFIGMAP_PATH}", body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def update_configmap(endpoint: str, creds, master0: str) -> Outcome:
    """GET the ConfigMap, edit its one key, PUT the object back with the resourceVersion it was
    read at: a concurrent `kubectl edit` makes the PUT answer 409 and the edit is redone on the
    new text instead of overwriting it (a few times, bounded)."""
    where = "ConfigMap kube-system/sealer-clusterfile"
    try:
        for _ in range(PUT_ATTEMPTS):
            status, body = _request(endpoint, creds, "GET")
            if status == 404:
                return Outcome(where, "absent")
            if status != 200:
                return Outcome(where, "failed", f"GET answered {status} at {endpoint}")
            obj = json.loads(body)
            text = (obj.get("data") or {}).get(CONFIGMAP_KEY)
            if text is None:
                return Outcome(where, "absent", f"no key {CONFIGMAP_KEY}")
            try:
                edited = master0_first(text, master0)
            except ClusterfileError as e:
                return Outcome(where, "failed", f"its Clusterfile {e}")
            if edited == text:
                return Outcome(where, "unchanged", f"{master0} already first")
            obj["data"][CONFIGMAP_KEY] = edited
            status, body = _request(endpoint, creds, "PUT", json.dumps(obj).encode())
            if status == 200:
                return Outcome(where, "updated", f"{master0} first")
            if status != 409:
                return Outcome(where, "failed", f"PUT answered {status} at {endpoint}")
        return Outcome(where, "failed", f"edited concurrently {PUT_ATTEMPTS} times; rerun")
    except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as e:
        return Outcome(where, "failed", f"{endpoint}: {getattr(e, 'strerror', None) or e}")


def parse_listing(stdout: str) -> dict[str, bytes]:
    """scripts/sealer-clusterfile.sh `read`: one `<path>\\t<base64>` line per Clusterfile."""
    files: dict[str, bytes] = {}
    for line in stdout.splitlines():
        if line.strip():
            path, _, data = line.partition("\t")
            files[path] = base64.b64decode(data)
    return files


def update_host_files(run: Callable[..., "object"], ip: str, name: str,
                      master0: str) -> list[Outcome]:
    """Every Clusterfile of sealer on live host ``ip`` (``run(ip, *args, data=...)`` runs
    scripts/sealer-clusterfile.sh there and returns a CompletedProcess; ``name``: the cluster's,
    for v0.8's path): read, edited, and written back only when it changes, guarded by the sha256
    it was read with."""
    done = run(ip, "read", name)
    if done.returncode != 0:
        return [Outcome(f"{ip} Clusterfiles", "failed",
                        (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1])]
    outcomes = []
    for path, data in parse_listing(done.stdout).items():
        where = f"{ip}:{path}"
        try:
            text = data.decode()
            edited = master0_first(text, master0)
        except (UnicodeDecodeError, ClusterfileError) as e:
            outcomes.append(Outcome(where, "failed", str(e)))
            continue
        if edited == text:
            outcomes.append(Outcome(where, "unchanged", f"{master0} already first"))
            continue
        wrote = run(ip, "write", name, path, hashlib.sha256(data).hexdigest(), data=edited)
        if wrote.returncode != 0:
            outcomes.append(Outcome(where, "failed", (wrote.stderr.strip().splitlines() or
                                                     [f"exit {wrote.returncode}"])[-1]))
        else:
            outcomes.append(Outcome(where, "updated", f"{master0} first"))
    return outcomes


def read_masters(session, config, down_hosts: list[str]) -> tuple[list[str] | None, str]:
    """sealer's masters in its Clusterfile's order (the ConfigMap, what sealer reads first),
    asked of the apiserver the records go through once ``down_hosts`` is set; (None, why) when it
    cannot be read (no ConfigMap: v0.8, or the apiserver does not answer)."""
    from cli import apiserver
    import kubeapi

    try:
        endpoint = kubeapi.choose(config, down_hosts)
        text, base = apiserver.kubeconfig_text(session)
        creds = apiserver._Credentials(text, config.kubernetes.context or None, base)
        status, body = _request(endpoint, creds, "GET")
        if status != 200:
            return None, f"GET sealer-clusterfile answered {status} at {endpoint}"
        clusterfile = (json.loads(body).get("data") or {}).get(CONFIGMAP_KEY)
        if clusterfile is None:
            return None, f"sealer-clusterfile has no key {CONFIGMAP_KEY}"
        return masters_of(clusterfile), f"ConfigMap kube-system/sealer-clusterfile at {endpoint}"
    except Exception as e:  # noqa: BLE001  (the caller falls back on the stack's order)
        return None, f"{type(e).__name__}: {str(e).strip()[:300]}"


def update(session, config, master0: str) -> Report:
    """After `up` verified a recovery (``config``: the stack config `up` applied): the ConfigMap
    through the apiserver the records go through, then every live host's Clusterfiles over SSH.
    Hosts in down_hosts are never dialled."""
    from cli import apiserver
    from components.remote_scripts import script_run
    import kubeapi

    report = Report()
    endpoint = kubeapi.choose(config)
    text, base = apiserver.kubeconfig_text(session)
    try:
        creds = apiserver._Credentials(text, config.kubernetes.context or None, base)
    except (ValueError, OSError, ssl.SSLError, yaml.YAMLError) as e:
        report.outcomes.append(Outcome("ConfigMap kube-system/sealer-clusterfile", "failed",
                                       f"the kubeconfig cannot be used: {e}"))
    else:
        report.outcomes.append(update_configmap(endpoint, creds, master0))
    ssh = session.ssh()
    down = set(config.down_hosts)

    def run(ip: str, *args: str, data: str | None = None):
        return ssh.run(ip, script_run("sealer-clusterfile.sh", *args, data=data))

    for ip in [*config.cluster.masters, *config.cluster.nodes]:
        if ip not in down:
            report.outcomes.extend(update_host_files(run, ip, config.cluster.name, master0))
    return report
