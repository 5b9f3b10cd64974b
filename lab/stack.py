"""The stack harness: a lab of real hosts with generated images (``LabEnv``), the stack config
that points this project at it (``stack_values``), and a stack of this project driven through the
Automation API (``ProgramStack``, whose ``RunReport`` says what a preview or up did).

tests/e2e and bench both drive the program through it; what they assert stays with them. Needs
the Pulumi SDK and the engine toolchain (the control plane's binaries, the engine to run a stack):
``python -m lab`` does not import it.

A ``ProgramStack`` owns one stack of the project; its plain config is written into
``Pulumi.<stack>.yaml`` and its secrets are set through the engine, exactly as an operator would
with ``pulumi config set [--secret] --path``.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from pulumi import automation as auto

from config import PROJECT
from lab import controlplane
from lab import images as lab_images
from lab import store as lab_store
from lab.hosts import REPO, Lab
from material import pki

PROJECT_DIR = REPO
DOMAIN = "sea.hub"
PORT = 5000
PASSWORD = "e2e-Registry-Passw0rd"
SECRETS = {"registry.password": PASSWORD, **lab_store.SECRETS}


# ------------------------------------------------------------------------------ the lab


@dataclass
class LabEnv:
    lab: Lab
    inventory: dict
    key_path: Path
    store: Path
    history_file: Path
    cluster_image_id: str
    refs: list[str]            # every REPO:TAG@DIGEST the registry must serve
    kubeconfig: Path           # the operator's: admin credentials, server master0's apiserver
    ca: tuple[str, str]        # (cert, key) for stacks that bring their own CA
    # The store registry serving ``store`` (lab/store.py): ``.config()`` is the stack's
    # ``apps.image_store`` block, ``.secrets`` its password by config path.
    store_registry: lab_store.StoreRegistry | None = None

    @property
    def masters(self) -> list[str]:
        return [h["ip"] for h in self.inventory["hosts"] if h["role"] == "master"]

    @property
    def nodes(self) -> list[str]:
        return [h["ip"] for h in self.inventory["hosts"] if h["role"] == "node"]

    @property
    def all_ips(self) -> list[str]:
        return [*self.masters, *self.nodes]

    @property
    def rootfs(self) -> str:
        return f"{self.inventory['data_root']}/{self.inventory['cluster']}/rootfs"

    def hosts_file(self, ip: str) -> str:
        return self.lab.run(ip, "cat /etc/hosts").stdout


def make_lab_env(state: Path, masters: int = 3, nodes: int = 2,
                 apps: int = 2, app_size: int = 512 << 10, cluster_size: int = 1 << 20,
                 ca: tuple[str, str] | None = None, bin_dir: Path | None = None) -> LabEnv:
    """Bring up a lab in ``state`` (hosts, the control plane on the masters, images,
    application.json, the store registry serving them); ``Lab(state).down()`` undoes it. ``ca``: the registry CA to use (default:
    a new one); ``bin_dir``: the toolchain's (default: built or found by lab.toolchain)."""
    lab = Lab(state)
    lab.up(masters=masters, nodes=nodes)
    cp = controlplane.up(lab, bin_dir=bin_dir)
    summary = lab_images.generate(state / "images", apps=apps, app_size=app_size, layers=2,
                                  cluster_size=cluster_size, seed=0,
                                  history=state / "application.json")
    refs = [f"{r['repository']}:{r['tag']}@{r['digest']}"
            for img in [summary["cluster"], *summary["apps"]] for r in img["refs"]]
    store_registry = lab_store.ensure(lab, summary["store"])
    return LabEnv(lab=lab, inventory=lab.inventory(), key_path=lab.key_path,
                  store=Path(summary["store"]), history_file=Path(summary["history"]),
                  cluster_image_id=summary["cluster_image_id"], refs=refs,
                  kubeconfig=cp.kubeconfig, ca=ca or pki.generate_ca(),
                  store_registry=store_registry)


def stack_values(lab_env: LabEnv, *, master0: str, down_hosts=(), distribution: str = "pre",
                 deploy_hosts: list[str] | None = None) -> dict[str, Any]:
    """Plain stack config for the lab: SSH key by path, pinned host keys, the lab's CA certificate
    (its key is a secret: ``{**SECRETS, "registry.tls.ca_key": lab_env.ca[1]}``), every master a
    deploy host unless ``deploy_hosts`` says otherwise."""
    inv = lab_env.inventory
    masters = [h["ip"] for h in inv["hosts"] if h["role"] == "master"]
    nodes = [h["ip"] for h in inv["hosts"] if h["role"] == "node"]
    return {
        "master0": master0,
        "down_hosts": list(down_hosts),
        "distribution": distribution,
        "cluster": {
            "name": inv["cluster"],
            "data_root": inv["data_root"],
            "masters": masters,
            "nodes": nodes,
            "ssh": {"user": "root", "port": 22, "private_key_path": str(lab_env.key_path),
                    "host_keys": {h["ip"]: h["host_key"] for h in inv["hosts"]}},
        },
        "registry": {
            "domain": DOMAIN, "port": PORT, "username": "admin",
            "local_registry": {"deploy_hosts": deploy_hosts or masters, "insecure_mode": False},
            "tls": {"ca_cert": lab_env.ca[0]},
        },
        # The lab's store registry (make_lab_env starts it; a test that adds an image to the
        # store calls lab_store.ensure again).
        "apps": {"history_file": str(lab_env.history_file),
                 "image_store": lab_store.config_for(lab_env.lab.state, lab_env.store),
                 "cluster_image_id": lab_env.cluster_image_id},
        "kubernetes": {"kubeconfig_path": str(lab_env.kubeconfig), "cluster_identifier": "lab"},
    }


def hosts_line(lab: Lab, ip: str) -> list[str]:
    """The host's /etc/hosts lines that map the registry domain."""
    text = lab.run(ip, "cat /etc/hosts").stdout
    return [line for line in text.splitlines() if re.search(rf"\s{re.escape(DOMAIN)}(\s|$)", line)]


def registry_running(lab: Lab, ip: str) -> bool:
    """Something answers /v2/ on the host's registry port (from inside the host)."""
    probe = lab.run(ip, f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 3 https://127.0.0.1:{PORT}/v2/",
                    check=False)
    return probe.stdout.strip() in ("200", "401")


def entry_servers(lab: Lab, ip: str, stats_port: int = 5099) -> list[str]:
    """A node entry point's servers as its HAProxy stats page reports them: ``ip:port STATUS
    [backup]`` (read with the csv module: a failed check's text is quoted and may hold commas);
    [] when no stats page answers."""
    text = lab.run(ip, f"curl -sf --max-time 3 'http://127.0.0.1:{stats_port}/;csv'",
                   check=False).stdout
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []   # no stats page answers
    head = [name.lstrip("# ") for name in rows[0]]
    col = {name: i for i, name in enumerate(head)}
    out = []
    for f in rows[1:]:
        if len(f) < len(head) or f[col["svname"]] in ("FRONTEND", "BACKEND") or not f[col["addr"]]:
            continue
        out.append(f"{f[col['addr']]} {f[col['status']]}" + (" backup" if f[col["bck"]] == "1" else ""))
    return out


# ------------------------------------------------------------------------------ the stack


@dataclass
class RunReport:
    """What one preview or up did: the steps by resource name and how long it took."""

    steps: dict[str, str] = field(default_factory=dict)  # resource name -> op
    types: dict[str, str] = field(default_factory=dict)  # resource name -> type token
    seconds: float = 0.0
    summary: Any = None
    stdout: str = ""

    def changed(self) -> dict[str, str]:
        return {n: op for n, op in self.steps.items() if op not in ("same", "read")}

    def remote_commands(self) -> list[str]:
        """Remote or local commands the run executed (created, updated or replaced)."""
        return [n for n, op in self.changed().items()
                if self.types.get(n, "").startswith("command:")
                and op in ("create", "update", "replace", "create-replacement")]


def step_recorder(report: RunReport) -> Callable[[auto.EngineEvent], None]:
    """An engine event handler that records each step's op and type into ``report``."""
    def handle(event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is None or pre.metadata is None:
            return
        meta = pre.metadata
        name = meta.urn.rsplit("::", 1)[-1]
        report.types[name] = meta.type
        op = meta.op.value if hasattr(meta.op, "value") else str(meta.op)
        # A replace shows as several steps; keep the most telling one.
        if report.steps.get(name) in ("replace",):
            return
        report.steps[name] = op
    return handle


class ProgramStack:
    def __init__(self, name: str, env: dict[str, str]):
        self.name = name
        self.env = env
        self.stack_file = PROJECT_DIR / f"Pulumi.{name}.yaml"
        self.stack = auto.create_or_select_stack(
            stack_name=name, work_dir=str(PROJECT_DIR),
            opts=auto.LocalWorkspaceOptions(env_vars=env))

    def configure(self, plain: dict[str, Any], secrets: dict[str, str]) -> None:
        """Replace the stack's config: plain values in the stack file, secrets through the engine."""
        doc = yaml.safe_load(self.stack_file.read_text()) or {}
        doc["config"] = {f"{PROJECT}:{k}": v for k, v in plain.items()}
        self.stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        for path, value in secrets.items():
            self.set_secret(path, value)

    def set_secret(self, path: str, value: str) -> None:
        """`pulumi config set --secret --path` with the value on stdin: the Automation API's
        set_config would put it on the command line, visible in every process list."""
        subprocess.run(["pulumi", "config", "set", "--secret", "--path", "--stack", self.name,
                        f"{PROJECT}:{path}"], input=value, cwd=PROJECT_DIR, env=self.env,
                       capture_output=True, text=True, check=True)

    def set(self, path: str, value: Any) -> None:
        """One plain value at a dotted path, as `pulumi config set --path` would; the rest of the
        object (its encrypted values included) stays as it is."""
        doc = yaml.safe_load(self.stack_file.read_text())
        top, *rest = path.split(".")
        if not rest:
            doc["config"][f"{PROJECT}:{top}"] = value
        else:
            node = doc["config"][f"{PROJECT}:{top}"]
            for part in rest[:-1]:
                node = node.setdefault(part, {})
            node[rest[-1]] = value
        self.stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def preview(self) -> RunReport:
        report = RunReport()
        start = time.monotonic()
        result = self.stack.preview(on_event=step_recorder(report), color="never")
        report.seconds = time.monotonic() - start
        report.summary = result.change_summary
        report.stdout = result.stdout
        return report

    def up(self) -> RunReport:
        report = RunReport()
        start = time.monotonic()
        result = self.stack.up(on_event=step_recorder(report), color="never")
        report.seconds = time.monotonic() - start
        report.summary = result.summary.resource_changes
        report.stdout = result.stdout
        return report

    def export(self) -> str:
        """`pulumi stack export` as an operator runs it: secrets encrypted. (The Automation API's
        export_stack passes --show-secrets, which is not what the state holds.)"""
        done = subprocess.run(["pulumi", "stack", "export", "--stack", self.name],
                              cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True,
                              check=True)
        return done.stdout

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.stack.outputs().items()}

    def remove(self) -> None:
        try:
            self.stack.workspace.remove_stack(self.name, force=True)
        finally:
            self.stack_file.unlink(missing_ok=True)
