"""`adopt`: write a stack for an existing sealer cluster from what sealer left on master0."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cli.clusterfile import (Clusterfile, ClusterfileError, differences, parse_clusterfile,
                             parse_registry_settings)
from cli.sealer_log import (HistoryError, LaunchOverride, history_from_log, is_sealer_log_entry,
                            parse_flags, split_log)
from cli.common import EXIT_OK, CliError, guarded, parse_ip, resolve_local_path
from cli.engine import Engine
from cli.ssh import ssh_error
from components.remote_scripts import script_run
from config import PROJECT, BootHistory, ConfigError, build_config, load_stack_file
from config.stack import is_secret_path
from config.loader import stack_file_path
from material.registry_config import brought_config_problems

NAME = "adopt"
HELP = "write a stack for an existing sealer cluster from what sealer left on master0"
DESCRIPTION = """\
Adopt a running sealer cluster: `adopt --from MASTER0 --stack NAME`.

1. Reads the ConfigMaps kube-system/sealer-clusterfile (the Clusterfile sealer reads first) and
   sealer-registry through --kubeconfig; pins master0's SSH host key (ssh-keyscan, or --host-key)
   and reads, in one SSH session as --user (sudo -n when not root; nothing is changed there):
   the Clusterfile file (~/.sealer/Clusterfile of root, v0.8's ~/.sealer/<name>/Clusterfile, or
   --clusterfile), the application log beside it (application.json), the ConfigMaps with kubectl
   and /etc/kubernetes/admin.conf when the API did not answer, and from the rootfs
   <dataRoot>/<name>/rootfs: certs/<domain>.crt|.key, etc/registry_config.yml,
   etc/registry_htpasswd, v0.8's etc/registry.yml, the cache/registry flags (image ids and their
   mtimes), and the SSH key files the Clusterfile names (pk). Without the sealer-registry
   ConfigMap it also reads one node's /etc/hosts line for the domain and reg-lvscare manifest.
2. Builds the stack config: the ConfigMap's Clusterfile (how the file differs is printed), hosts
   and roles, the SSH user and port (per-host ones under cluster.ssh.hosts), every login sealer
   has: its pk (read on master0) as cluster.ssh.private_key AND its passwd as
   cluster.ssh.password (per-host ones under cluster.ssh.hosts; `encrypted: true` ones
   decrypted), secrets; --ssh-key when a host has no usable one; every host's host key
   (ssh-keyscan, trust on first use: compare the fingerprints printed); the registry mode from
   the cluster (ConfigMap sealer-registry, else a node's reg-lvscare or hosts line, else the
   Clusterfile as sealer's decoder reads it): HA clusters get registry.local_registry.ha (every
   master keeps its registry, no hosts line or VIP is touched); the registry's domain, port and
   login (v0.8: from its etc/registry.yml), sealer's cert and key (nodes keep their trust), its
   htpasswd and registry config as-is (the registry sealer started keeps serving); the boot
   history built from the application log paired in run order with the cache/registry image
   ids (cli/sealer_log.py), inline. Every master is a deploy host.
3. Checks the whole config offline (every problem printed; nothing written if any), then writes
   Pulumi.NAME.yaml: plain values in the file, every secret through `pulumi config set --secret`
   on stdin (never on a command line), creating the stack in the backend if needed; and
   validates the file as `python -m cli validate` does.

Refused, naming what to do: an existing Pulumi.NAME.yaml (without --force), a cluster with only
an external registry (no builtin one to keep), an application log that cannot be paired with
the cache/registry ids (give --history-file), hosts with no usable login (another pk than the
others' or a passphrase-protected one, and no passwd; give --ssh-key), --from not being the
Clusterfile's master0. A non-root SSH user needs passwordless sudo on every host: the
program's steps run through `sudo -n`.

Exit codes: 0 written and valid; 2 refused or failed, nothing left behind (a stack this command
created is removed again). Needs the engine's environment (`pulumi` on PATH or --pulumi, the
backend, PULUMI_CONFIG_PASSPHRASE[_FILE]) and OpenSSH (ssh, ssh-keyscan).
"""
EPILOG = """\
examples:
  $ python -m cli adopt --from 192.168.0.2 --stack prod --ssh-key ~/.ssh/id_rsa
  $ python -m cli adopt --from 192.168.0.2 --stack prod --kubeconfig ~/prod.kubeconfig --force
"""

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60.0
KEYSCAN_TIMEOUT_S = 3
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "rsa-sha2-512", "ssh-rsa")
READ_SCRIPT = "adopt-read.sh"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_ip", required=True, metavar="IP",
                        help="master0 of the sealer cluster (where sealer's registry runs)")
    parser.add_argument("--stack", required=True, metavar="NAME",
                        help="stack to write (Pulumi.NAME.yaml; created in the backend if missing)")
    parser.add_argument("--project-dir", default=".", metavar="DIR",
                        help="directory holding Pulumi.yaml (default: current directory)")
    parser.add_argument("--pulumi", metavar="PATH", help="the pulumi CLI to use (default: on PATH)")
    parser.add_argument("--ssh-key", metavar="PATH",
                        help="SSH private key to reach master0 (default: ssh's own keys and agent); "
                             "also the stack's key when the Clusterfile's pk cannot be")
    parser.add_argument("--ssh-password-file", metavar="PATH",
                        help="file holding the SSH password of --user on master0 (given to ssh "
                             "by an askpass helper, never on a command line)")
    parser.add_argument("--user", default="root", help="SSH user on master0 (default root)")
    parser.add_argument("--port", type=int, default=22, help="SSH port of master0 (default 22)")
    parser.add_argument("--host-key", metavar="LINE",
                        help="master0's expected host key ('ssh-ed25519 AAAA...'); default: "
                             "trust what ssh-keyscan sees and print its fingerprint")
    parser.add_argument("--clusterfile", metavar="PATH",
                        help="the Clusterfile's path on master0 (default: ~/.sealer/Clusterfile of root)")
    parser.add_argument("--kubeconfig", default="~/.kube/config", metavar="PATH",
                        help="kubeconfig the program reaches the cluster with (default ~/.kube/config)")
    parser.add_argument("--history-file", metavar="PATH",
                        help="a local boot history ({type, applications: [{name, image_id, type, "
                             "launch_cmd, version}], launch}) instead of the one built from "
                             "master0's application log and cache/registry ids")
    parser.add_argument("--registry-password-file", metavar="PATH",
                        help="file holding the registry password, when the Clusterfile has none")
    parser.add_argument("--distribution", choices=["pre", "post"], default="pre")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing Pulumi.NAME.yaml")


# -- reading master0 ------------------------------------------------------------------------------


def keyscan(hosts: dict[str, int]) -> dict[str, str]:
    """``{ip: "<type> <base64>"}`` of the hosts that answer ssh-keyscan within the timeout, the
    strongest type first (ed25519, ecdsa, rsa). Hosts grouped by port (one scan each)."""
    found: dict[str, dict[str, str]] = {}
    by_port: dict[int, list[str]] = {}
    for ip, port in hosts.items():
        by_port.setdefault(port, []).append(ip)
    for port, ips in by_port.items():
        try:
            done = subprocess.run(["ssh-keyscan", "-T", str(KEYSCAN_TIMEOUT_S), "-p", str(port),
                                   "-t", "ed25519,ecdsa,rsa", *ips], capture_output=True,
                                  text=True, timeout=KEYSCAN_TIMEOUT_S * len(ips) + 10)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CliError(f"ssh-keyscan failed: {e}") from None
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) < 3 or line.startswith("#"):
                continue
            host = parts[0].removeprefix("[").split("]:")[0]
            found.setdefault(host, {})[parts[1]] = parts[2]
    return {ip: next(f"{t} {keys[t]}" for t in KEY_TYPES if t in keys)
            for ip, keys in found.items() if any(t in keys for t in KEY_TYPES)}


def fingerprint(host_key: str) -> str:
    """`SHA256:...` as ssh-keygen -lf prints it."""
    import base64
    import hashlib

    blob = base64.b64decode(host_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass
class SealerFiles:
    """What adopt-read.sh sent back."""

    meta: dict[str, str]
    clusterfile: str
    history: str | None
    certs: dict[str, str]
    registry_config: str | None
    htpasswd: str | None
    files: dict[str, str]            # path on master0 -> content
    flags: str = ""                  # `<mtime> <name>` per <rootfs>/cache/registry file
    registry_settings: str | None = None   # v0.8's <rootfs>/etc/registry.yml
    configmaps: dict[str, str] = field(default_factory=dict)  # read with kubectl on master0
    # The config the running registry reads, when the rootfs has no etc/registry_config.yml.
    running_config: str | None = None

    @classmethod
    def from_tar(cls, data: bytes) -> SealerFiles:
        text = _tar_texts(data)
        meta = dict(line.split("=", 1) for line in text.get("meta", "").splitlines() if "=" in line)
        files = {meta[f"file.{k.removeprefix('files/')}"]: v for k, v in text.items()
                 if k.startswith("files/") and f"file.{k.removeprefix('files/')}" in meta}
        return cls(meta=meta, clusterfile=text.get("clusterfile", ""),
                   history=text.get("application.json"),
                   certs={k.removeprefix("rootfs/certs/"): v for k, v in text.items()
                          if k.startswith("rootfs/certs/")},
                   registry_config=text.get("rootfs/etc/registry_config.yml"),
                   htpasswd=text.get("rootfs/etc/registry_htpasswd"), files=files,
                   flags=text.get("flags", ""),
                   registry_settings=text.get("rootfs/etc/registry.yml"),
                   configmaps={k.removeprefix("cm/"): v for k, v in text.items()
                               if k.startswith("cm/")},
                   running_config=text.get("running/config.yml"))


@dataclass(frozen=True)
class NodeFacts:
    """What `adopt-read.sh --node DOMAIN` sent back from one host."""

    ip: str
    hosts_lines: list[str]           # /etc/hosts lines naming the domain
    lvscare: str | None              # /etc/kubernetes/manifests/reg-lvscare.yaml

    @classmethod
    def from_tar(cls, ip: str, data: bytes) -> NodeFacts:
        text = _tar_texts(data)
        return cls(ip, [line for line in text.get("node/hosts", "").splitlines() if line.strip()],
                   text.get("node/reg-lvscare.yaml"))


def _tar_texts(data: bytes) -> dict[str, str]:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    members[member.name.removeprefix("./")] = tar.extractfile(member).read()
    except tarfile.TarError as e:
        raise CliError(f"the host sent no readable tar ({e})") from None
    return {k: v.decode("utf-8", "replace") for k, v in members.items()}


class Master0:
    """OpenSSH to master0 (or, for `read_node`, another host) with a pinned host key, BatchMode
    and bounded timeouts."""

    def __init__(self, ip: str, user: str, port: int, key: Path | None, host_key: str, tmp: Path,
                 password_file: Path | None = None, extra_keys: tuple[Path, ...] = ()):
        self.ip, self.user, self.port, self.key = ip, user, port, key
        self.extra_keys = extra_keys
        self.known_hosts = tmp / f"known_hosts-{ip}"
        name = ip if port == 22 else f"[{ip}]:{port}"
        self.known_hosts.write_text(f"{name} {host_key}\n")
        self.askpass: Path | None = None
        if password_file is not None:
            # ssh asks this helper (SSH_ASKPASS_REQUIRE=force); it prints the operator's file.
            self.askpass = tmp / "askpass"
            self.askpass.write_text(f"#!/bin/sh\nexec cat {shlex.quote(str(password_file))}\n")
            self.askpass.chmod(0o700)

    def argv(self) -> list[str]:
        batch = (["-o", "BatchMode=yes"] if self.askpass is None else
                 ["-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1",
                  "-o", "PreferredAuthentications=publickey,keyboard-interactive,password"])
        argv = ["ssh", "-F", "none", "-p", str(self.port), *batch,
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "ServerAliveInterval=3",
                "-o", "ServerAliveCountMax=2", "-o", "LogLevel=ERROR",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null"]
        keys = [k for k in (self.key, *self.extra_keys) if k is not None]
        for key in keys:
            argv += ["-i", str(key)]
        if keys:
            argv += ["-o", "IdentitiesOnly=yes"]
        return [*argv, f"{self.user}@{self.ip}"]

    def read(self, *args: str) -> SealerFiles:
        return SealerFiles.from_tar(self._run(*args))

    def read_node(self, domain: str) -> NodeFacts:
        return NodeFacts.from_tar(self.ip, self._run("--node", domain))

    def _run(self, *args: str) -> bytes:
        run = script_run(READ_SCRIPT, *args)
        command = run.command if self.user == "root" else f"sudo -n {run.command}"
        try:
            env = None if self.askpass is None else dict(
                os.environ, SSH_ASKPASS=str(self.askpass), SSH_ASKPASS_REQUIRE="force")
            done = subprocess.run([*self.argv(), "--", command], input=run.stdin.encode(),
                                  capture_output=True, timeout=READ_TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            raise CliError(f"reading {self.ip} timed out after {READ_TIMEOUT_S:.0f}s") from None
        stderr = done.stderr.decode("utf-8", "replace")
        if done.returncode != 0:
            why = next((line.split("error: ", 1)[1] for line in stderr.splitlines()
                        if f"{READ_SCRIPT}: error: " in line), None)
            if why is None:
                why = ssh_error(stderr, done.returncode)
            raise CliError(f"cannot read what sealer left on {self.ip}: {why}")
        return done.stdout


# -- the cluster's ConfigMaps -----------------------------------------------------------------------

CONFIGMAPS = {"sealer-clusterfile": "Clusterfile", "sealer-registry": "registry"}
"""The ConfigMaps in kube-system adopt reads, and their data key (pkg/clusterfile/clusterfile.go
@v0.11.0:39-43; pkg/cluster-runtime/installer.go@v0.11.0:43,417-442)."""
API_TIMEOUT_S = 5.0


def read_configmaps_api(kubeconfig: Path) -> tuple[dict[str, str | None] | None, str]:
    """``({name: data or None (absent)}, "")`` read through the kubeconfig's apiserver with its own
    credentials (cli/apiserver.py), or ``(None, why not)`` when the API cannot be asked."""
    import http.client
    import socket
    import ssl
    from urllib.parse import urlsplit

    import kubeapi
    from cli.apiserver import _Credentials

    try:
        text = kubeconfig.read_text()
        server = kubeapi.current_server(text, None)
        creds = _Credentials(text, None, kubeconfig.parent)
    except (OSError, ValueError, ssl.SSLError, yaml.YAMLError, AttributeError) as e:
        return None, f"the kubeconfig {kubeconfig} cannot be used ({getattr(e, 'strerror', None) or e})"
    url = urlsplit(server)
    out: dict[str, str | None] = {}
    for name, key in CONFIGMAPS.items():
        try:
            raw = socket.create_connection((url.hostname or "", url.port or 443), timeout=API_TIMEOUT_S)
            tls = creds.context.wrap_socket(raw, server_hostname=creds.server_name or url.hostname)
            conn = http.client.HTTPConnection(url.hostname or "", url.port or 443, timeout=API_TIMEOUT_S)
            conn.sock = tls
            conn.request("GET", f"{url.path.rstrip('/')}/api/v1/namespaces/kube-system/configmaps/{name}",
                         headers={"Accept": "application/json", **creds.headers})
            reply = conn.getresponse()
            body = reply.read()
            conn.close()
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            return None, f"the apiserver {server} does not answer ({getattr(e, 'strerror', None) or e})"
        if reply.status == 404:
            out[name] = None
            continue
        if reply.status != 200:
            return None, f"the apiserver {server} answers {reply.status} for ConfigMap kube-system/{name}"
        try:
            out[name] = (json.loads(body).get("data") or {}).get(key) or None
        except (ValueError, AttributeError):
            return None, f"the apiserver {server} sent no ConfigMap for kube-system/{name}"
    return out, ""


def configmaps_from_master0(files: SealerFiles) -> tuple[dict[str, str | None], list[str]]:
    """What adopt-read.sh --kubectl read on master0, and what could not be read."""
    out: dict[str, str | None] = {}
    problems = []
    for name in CONFIGMAPS:
        state = files.meta.get(f"cm.{name}", "error")
        if state == "error":
            problems.append(f"ConfigMap kube-system/{name} could not be read with kubectl on master0 "
                            "(no kubectl or /etc/kubernetes/admin.conf there, or the apiserver "
                            "does not answer)")
        out[name] = files.configmaps.get(name) if state == "found" else None
    return out, problems


def choose_clusterfile(file_text: str, file_path: str, cm_text: str | None,
                       notes: list[str]) -> str:
    """The ConfigMap's Clusterfile when the cluster has one (sealer reads it before the file:
    pkg/clusterfile/clusterfile.go@v0.11.0:202-271), with how the file differs in the notes."""
    if cm_text is None:
        notes.append(f"the Clusterfile is {file_path} (no ConfigMap kube-system/sealer-clusterfile "
                     "was read: sealer before v0.9 keeps none)")
        return file_text
    try:
        diff = differences(cm_text, file_text)
    except ClusterfileError:
        diff = ["(the file is not YAML)"]
    if diff:
        notes.append(f"the Clusterfile is ConfigMap kube-system/sealer-clusterfile (sealer reads it "
                     f"first); {file_path} differs in {len(diff)} fields (ConfigMap -> file): "
                     + "; ".join(diff))
    else:
        notes.append(f"the Clusterfile is ConfigMap kube-system/sealer-clusterfile; {file_path} "
                     "holds the same")
    return cm_text


# -- the stack config -----------------------------------------------------------------------------


@dataclass
class Adoption:
    """The stack config made from what sealer left: plain values, secrets, and what to say."""

    plain: dict[str, Any]
    secrets: dict[str, str]
    notes: list[str] = field(default_factory=list)


def _seed_history(doc: Any, where: str) -> dict:
    """This project's own boot-history document (older stacks and tests keep working)."""
    try:
        BootHistory.model_validate(doc)
    except Exception as e:
        raise CliError(f"{where} is not a valid boot history ({str(e).splitlines()[0]}); give "
                       "one with --history-file PATH") from None
    return doc


def boot_history(cf: Clusterfile, files: SealerFiles, notes: list[str]) -> dict:
    """The boot history from what sealer keeps (cli/sealer_log.py): the application log paired
    with master0's cache/registry flags, the Clusterfile's launch overrides; or this project's seed
    document; or, with neither log nor flags (sealer v0.8 records none), an empty history."""
    where = f"{files.meta.get('history', 'application.json')} on master0"
    flags, skipped = parse_flags(files.flags)
    if skipped:
        notes.append(f"cache/registry on master0 holds files that are not image ids, skipped: "
                     f"{', '.join(skipped[:5])}")
    if files.history is None or not files.history.strip():
        if flags:
            raise CliError(f"no application log at {where}, but cache/registry holds {len(flags)} "
                           "image ids: which applications they hold is unknown; give the boot "
                           "history with --history-file PATH")
        notes.append(f"no application log at {where} and no cache/registry flags (sealer before "
                     "v0.9 records neither): the boot history lists no applications")
        return {"type": "unrecorded", "applications": [], "launch": {"app_names": []}}
    try:
        entries = split_log(files.history)
    except Exception as e:
        raise CliError(f"{where} {e}; give the boot history with --history-file PATH") from None
    if len(entries) == 1 and isinstance(entries[0], dict) and not is_sealer_log_entry(entries[0]):
        return _seed_history(entries[0], where)
    if not all(is_sealer_log_entry(e) for e in entries):
        raise CliError(f"{where} mixes sealer's image extensions with other JSON: give the boot "
                       "history with --history-file PATH")
    overrides = []
    if cf.app_names is not None or cf.cmds:
        overrides.append(LaunchOverride("the Cluster document's spec.appNames/cmd",
                                        cf.app_names, cf.cmds))
    overrides += [LaunchOverride(f"Application document {a.name or '(unnamed)'}",
                                 a.launch_apps, a.cmds) for a in cf.applications]
    try:
        built = history_from_log(entries, flags, cluster_image=cf.image, overrides=overrides)
    except HistoryError as e:
        raise CliError(f"{where} {e}; give the boot history with --history-file PATH") from None
    notes += built.notes
    notes.append(f"boot history: {len(built.history['applications'])} applications from "
                 f"{len(entries)} entries of {where} paired with {len(flags)} cache/registry "
                 "image ids in run order (flag mtimes)")
    return _seed_history(built.history, f"the boot history built from {where}")


@dataclass(frozen=True)
class RegistryMode:
    """How sealer runs the builtin registry on this cluster, and what said so."""

    ha: bool
    source: str
    vip: str = ""
    deploy_hosts: tuple[str, ...] = ()


def _registry_configmap(text: str) -> dict:
    """ConfigMap sealer-registry's `registry` (go-yaml v3, lowercase keys:
    pkg/cluster-runtime/installer.go@v0.11.0:417-442)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CliError(f"ConfigMap kube-system/sealer-registry is not YAML: "
                       f"{str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise CliError("ConfigMap kube-system/sealer-registry's `registry` is not a mapping")
    return doc


def node_evidence(facts: NodeFacts, cf: Clusterfile) -> tuple[bool | None, str, str]:
    """``(ha, what showed it, vip)`` from one host: a `reg-lvscare` static pod is sealer's HA
    layout (its `--vs` is the VIP); else the host's /etc/hosts line for the domain: master0's IP
    on a node or another master means one registry on master0, a master's own IP or a VIP on a
    node means HA (pkg/registry/local.go@v0.11.0:148-237). ``None`` when it shows nothing."""
    where = f"{facts.ip}"
    if facts.lvscare is not None:
        args = _lvscare_args(facts.lvscare)
        vip = next((args[i + 1].rsplit(":", 1)[0] for i, a in enumerate(args[:-1]) if a == "--vs"), "")
        return True, f"{where} runs sealer's reg-lvscare static pod", vip
    ips = [line.split()[0] for line in facts.hosts_lines]
    if not ips:
        return None, f"{where} has no /etc/hosts line for the domain", ""
    ip = ips[-1]   # the resolver takes the first match, sealer appends: both agree on one line
    if ip == cf.master0 and facts.ip != cf.master0:
        return False, f"{where} maps the domain to master0 {ip}", ""
    if facts.ip in cf.masters and ip == facts.ip:
        return True, f"master {where} maps the domain to itself", ""
    if facts.ip in cf.nodes and ip not in cf.hosts:
        return True, f"node {where} maps the domain to {ip}, no host of the cluster (a VIP)", ip
    return None, f"{where} maps the domain to {ip}", ""


def _lvscare_args(manifest: str) -> list[str]:
    """The lvscare container's args (a v1.Pod, pkg/ipvs/ipvs.go@v0.11.0:41-105)."""
    try:
        pod = yaml.safe_load(manifest)
        return [str(a) for c in pod["spec"]["containers"] for a in c.get("args") or []]
    except (yaml.YAMLError, TypeError, KeyError, AttributeError):
        return []


def probe_host(cf: Clusterfile) -> str | None:
    """The host whose view tells the registry mode: the first node, else the second master."""
    return cf.nodes[0] if cf.nodes else (cf.masters[1] if len(cf.masters) > 1 else None)


EXTERNAL_ONLY = ("has only an external registry ({where}): sealer runs no builtin registry on "
                 "this cluster, and this program keeps sealer's builtin one alive: nothing to adopt")


def registry_mode(cf: Clusterfile, files: SealerFiles, registry_cm: str | None,
                  notes: list[str], node: NodeFacts | None = None) -> RegistryMode:
    """HA or not, from the cluster: the ConfigMap sealer-registry (v0.10+; `local.localregistry.ha`,
    `local.deployhosts`, `local.vip`) first; then what a node shows (``node``: reg-lvscare, its
    /etc/hosts line, `node_evidence`); else the Clusterfile as the v0.11 decoder reads it
    (pkg/clusterfile/decoder.go@v0.11.0:185-209: a missing `ha` is true, whatever apiVersion);
    a Clusterfile with no registry section and sealer v0.8's etc/registry.yml in the rootfs is
    v0.8's single registry on master0. Refuses a cluster with only an external registry."""
    reg = cf.registry
    if registry_cm is not None:
        doc = _registry_configmap(registry_cm)
        local = doc.get("local")
        if not isinstance(local, dict):
            raise CliError("the cluster " + EXTERNAL_ONLY.format(
                where="ConfigMap kube-system/sealer-registry: `local` is null"))
        settings = local.get("localregistry") if isinstance(local.get("localregistry"), dict) else {}
        ha = settings.get("ha") is True
        if reg.local_given and reg.ha != ha:
            notes.append(f"the Clusterfile says ha: {str(reg.ha).lower()}, the cluster's ConfigMap "
                         f"sealer-registry ha: {str(ha).lower()}: the ConfigMap (what sealer "
                         "deployed) is followed")
        hosts = tuple(str(h) for h in local.get("deployhosts") or [])
        return RegistryMode(ha, "ConfigMap kube-system/sealer-registry", str(local.get("vip") or ""),
                            hosts)
    if not reg.local_given and reg.external is not None:
        raise CliError("the Clusterfile " + EXTERNAL_ONLY.format(
            where="spec.registry.externalRegistry, no localRegistry"))
    if node is not None:
        ha, shown, vip = node_evidence(node, cf)
        if ha is not None:
            said = reg.ha if reg.local_given else files.registry_settings is None
            if said != ha:
                notes.append(f"the Clusterfile says ha: {str(said).lower()}, but {shown}: the "
                             "cluster is followed")
            return RegistryMode(ha, shown, vip)
        notes.append(f"the registry mode is not shown by {shown}")
    if not reg.local_given and files.registry_settings is not None:
        return RegistryMode(False, "sealer v0.8's etc/registry.yml (no spec.registry in the "
                                   "Clusterfile)")
    if reg.local_given:
        return RegistryMode(reg.ha, "the Clusterfile's spec.registry.localRegistry"
                            + ("" if reg.ha_given else " (no `ha`: sealer's decoder makes it true)"))
    return RegistryMode(True, "the Clusterfile (no spec.registry: sealer's decoder makes a local "
                              "registry with ha: true)")


def _refusals(cf: Clusterfile, from_ip: str) -> None:
    if from_ip != cf.master0:
        raise CliError(f"--from {from_ip} is not the Clusterfile's master0 {cf.master0} (the "
                       "first master, where sealer's registry runs)")


def host_password_path(ip: str) -> str:
    """The engine's `--path` of a host's own SSH password."""
    return f'cluster.ssh.hosts["{ip}"].password'


def _credentials(cf: Clusterfile, files: SealerFiles, args: argparse.Namespace,
                 ssh: dict[str, Any], secrets: dict[str, str], notes: list[str]) -> None:
    """How the stack logs in to each host: as sealer does, with the key AND the password when the
    Clusterfile has both (sealer offers both, utils/ssh/connect.go@v0.11.0:97-110; the engine's
    connection and the CLI's ssh offer the key first and fall back to the password):
    the Clusterfile's pk (read on master0) as cluster.ssh.private_key, spec.ssh.passwd as
    cluster.ssh.password and a host's own passwd under cluster.ssh.hosts. The stack holds one
    key; --ssh-key replaces it when some host has neither a usable key nor a password."""
    # The stack has one key: spec.ssh.pk, or the one pk the hosts share.
    paths = {s.pk for s in cf.hosts_ssh.values() if s.pk and not s.pk_passwd}
    pk = cf.ssh.pk if cf.ssh.pk in paths else (next(iter(paths)) if len(paths) == 1 else "")
    key = files.files.get(pk) if pk else None
    by_key = {ip for ip, s in cf.hosts_ssh.items() if key is not None and s.pk == pk and not s.pk_passwd}
    by_password = {ip for ip, s in cf.hosts_ssh.items() if s.passwd}
    neither = [ip for ip in cf.hosts if ip not in by_key | by_password]
    if neither:
        why = (f"pk {pk} cannot be read on master0" if pk and key is None
               else "no passwd, and no pk the stack can use: another key than the other hosts', "
                    "or a passphrase-protected one")
        problem = f"the Clusterfile gives no usable login for {', '.join(neither)} ({why})"
        if not args.ssh_key:
            raise CliError(f"{problem}; give a key every host accepts with --ssh-key PATH")
        ssh["private_key_path"] = str(resolve_local_path(args.ssh_key, args.project_dir))
        notes.append(f"{problem}: the stack reaches every host with --ssh-key")
    elif by_key:
        secrets["cluster.ssh.private_key"] = key
        notes.append(f"the stack reaches {len(by_key)} hosts with the Clusterfile's key "
                     f"{pk} (read on master0, kept as a secret)")
    with_password = sorted(by_password, key=cf.hosts.index)
    if with_password:
        default = cf.ssh.passwd
        if default:
            secrets["cluster.ssh.password"] = default
        for ip in with_password:
            if cf.hosts_ssh[ip].passwd != default:
                secrets[host_password_path(ip)] = cf.hosts_ssh[ip].passwd
        both = [ip for ip in with_password if ip in by_key and "private_key_path" not in ssh]
        notes.append(f"the Clusterfile's passwd is kept as a secret for {', '.join(with_password)}"
                     + (f" ({len(both)} of them also have the key: the engine offers both, as "
                        "sealer does)" if both else ""))


def build_adoption(cf: Clusterfile, files: SealerFiles, args: argparse.Namespace,
                   host_keys: dict[str, str], registry_cm: str | None = None,
                   notes: list[str] | None = None, node: NodeFacts | None = None) -> Adoption:
    """The stack config for ``cf`` from what master0 sent and the cluster's ConfigMap
    sealer-registry (``registry_cm``, its `registry` key, when the cluster has one) (pure: no
    I/O but local paths made absolute)."""
    notes = list(notes or [])
    secrets: dict[str, str] = {}
    reg = cf.registry
    notes += [f"the Clusterfile: {q}" for q in cf.quirks]
    mode = registry_mode(cf, files, registry_cm, notes, node)
    _refusals(cf, args.from_ip)
    if not reg.local_given and files.registry_settings is not None:
        try:
            settings = parse_registry_settings(files.registry_settings)
        except ClusterfileError as e:
            raise CliError(f"{files.meta.get('rootfs')}/{e}") from None
        if settings.ip and settings.ip != cf.master0:
            raise CliError(f"sealer's etc/registry.yml puts the registry on {settings.ip} (ip), "
                           f"not on master0 {cf.master0}: this program keeps a registry on "
                           "master0 only")
        reg = type(reg)(domain=settings.domain, port=settings.port, username=settings.username,
                        password=settings.password, ha=False, local_given=False)
        notes.append("the registry's domain, port and login are sealer v0.8's etc/registry.yml "
                     "(its settings file, left as it is)")

    ssh: dict[str, Any] = {"user": cf.ssh.user, "port": cf.ssh.port,
                           "host_keys": {ip: host_keys[ip] for ip in cf.hosts if ip in host_keys}}
    overrides = {ip: {k: v for k, v in (("user", s.user), ("port", s.port))
                      if v != getattr(cf.ssh, k)} for ip, s in cf.overrides().items()}
    overrides = {ip: o for ip, o in overrides.items() if o}
    if overrides:
        ssh["hosts"] = overrides
    _credentials(cf, files, args, ssh, secrets, notes)
    unpinned = [ip for ip in cf.hosts if ip not in host_keys]
    if unpinned:
        notes.append(f"no host key pinned for {', '.join(unpinned)} (no answer to ssh-keyscan): "
                     "any key is accepted there until cluster.ssh.host_keys has one")

    registry: dict[str, Any] = {"domain": reg.domain, "port": reg.port,
                                "local_registry": {"insecure_mode": reg.insecure}}
    if mode.ha:
        registry["local_registry"]["ha"] = True
        notes.append(f"sealer's registry is HA ({mode.source}): a registry on every master "
                     f"({', '.join(cf.masters)}); the stack keeps them (registry.local_registry.ha)"
                     f" and changes no hosts line: the VIP {mode.vip or '10.103.97.2'} stays "
                     "lvscare's (reg-lvscare on the nodes)")
        if mode.deploy_hosts and sorted(mode.deploy_hosts) != sorted(cf.masters):
            notes.append(f"sealer deployed its registry to {', '.join(mode.deploy_hosts)}, the "
                         f"Clusterfile's masters are {', '.join(cf.masters)}: every master is a "
                         "deploy host of the stack")
    else:
        notes.append(f"sealer's registry runs on master0 only ({mode.source})")
    if reg.insecure:
        notes.append("the registry is insecure (plain HTTP): no certificate adopted")
    else:
        cert, key = files.certs.get(f"{reg.domain}.crt"), files.certs.get(f"{reg.domain}.key")
        if cert is None or key is None:
            raise CliError(f"{files.meta.get('rootfs')}/certs on master0 holds no "
                           f"{reg.domain}.crt and {reg.domain}.key: sealer's registry cert is missing")
        registry["tls"] = {"cert": cert}
        secrets["registry.tls.key"] = key
    password = reg.password
    if args.registry_password_file:
        password = resolve_local_path(args.registry_password_file, args.project_dir).read_text().rstrip("\n")
    username = reg.username
    if files.htpasswd is not None:
        users = [line.split(":", 1)[0] for line in files.htpasswd.splitlines() if ":" in line]
        username = username or (users[0] if len(users) == 1 else "")
        if not username or not password:
            raise CliError("master0 has etc/registry_htpasswd but the Clusterfile names no registry "
                           "username/password: give the password with --registry-password-file "
                           f"(users in the htpasswd: {', '.join(users) or 'none'})")
        secrets["registry.htpasswd"] = files.htpasswd
    if username and password:
        registry["username"] = username
        secrets["registry.password"] = password
    if files.registry_config is not None:
        problems = brought_config_problems(files.registry_config, reg.port)
        if problems:
            notes.append(f"sealer's etc/registry_config.yml {problems[0]}: the program writes its "
                         "own, and the registry restarts once at the first `up`")
        else:
            registry["config"] = files.registry_config
    elif files.running_config is not None:
        # sealer v0.8: no etc/registry_config.yml, the registry runs its image's own config. The
        # program writes it there, where init-registry.sh reads it, so the registry keeps its config.
        problems = brought_config_problems(files.running_config, reg.port)
        if problems:
            notes.append(f"the running registry's config {problems[0]}: the program writes its "
                         "own, and the registry restarts once at the first `up`")
        else:
            registry["config"] = files.running_config
            notes.append("no etc/registry_config.yml on master0 (sealer v0.8): the running "
                         "registry's own config is adopted; `up` writes it to "
                         "etc/registry_config.yml, which init-registry.sh reads")

    apps: dict[str, Any] = {}
    if args.history_file:
        apps["history_file"] = str(resolve_local_path(args.history_file, args.project_dir))
    else:
        apps["history"] = boot_history(cf, files, notes)
    if mode.ha:
        notes.append("the registry data is sealer's on every master (HA)")
    else:
        notes.append("the registry data is sealer's on master0; "
                     + ("`pulumi up` replicates it host to host to the other masters (pre mode)"
                        if args.distribution == "pre" else
                        "in post mode only master0 holds it: `recover` needs a replica or an "
                        "image store (apps.image_store)"))
    registry["local_registry"]["deploy_hosts"] = list(cf.masters)

    plain = {
        "master0": cf.master0,
        "down_hosts": [],
        "distribution": args.distribution,
        "cluster": {"name": cf.name, "data_root": cf.data_root, "masters": cf.masters,
                    "nodes": cf.nodes, "ssh": ssh},
        "registry": registry,
        "apps": {k: v for k, v in apps.items() if v is not None},
        "kubernetes": {"kubeconfig_path": str(resolve_local_path(args.kubeconfig, args.project_dir))},
    }
    return Adoption(plain=plain, secrets=secrets, notes=notes)


_PATH_PART = re.compile(r'([^.\[\]"]+)|\["([^"]+)"\]')


def path_parts(path: str) -> list[str]:
    """`a.b["10.0.0.1"].c` (the engine's `--path`) -> ["a", "b", "10.0.0.1", "c"]."""
    return [m.group(1) or m.group(2) for m in _PATH_PART.finditer(path)]


def _with_secrets(plain: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    values = json.loads(json.dumps(plain))
    for path, value in secrets.items():
        node = values
        *parents, last = path_parts(path)
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return values


def check_offline(adoption: Adoption, project_dir: Path) -> None:
    """The whole config, secrets in plaintext, as the program checks it: nothing is written if
    any value is refused."""
    assert all(is_secret_path(".".join(path_parts(p))) for p in adoption.secrets)
    try:
        build_config(_with_secrets(adoption.plain, adoption.secrets), base_dir=project_dir,
                     check_files=True)
    except ConfigError as e:
        raise CliError("the adopted config is not valid (nothing written):\n" + "\n".join(e.lines())) from None


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PEM, the registry config) as `|` blocks, as an operator writes them."""


_BlockDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def write_stack(engine: Engine, stack_file: Path, adoption: Adoption) -> None:
    """Plain values into the stack file (keeping what the engine put there: encryptionsalt,
    secretsprovider), then each secret through the engine on stdin."""
    doc: dict[str, Any] = {}
    if stack_file.is_file():
        doc = yaml.safe_load(stack_file.read_text()) or {}
    doc["config"] = {f"{PROJECT}:{k}": v for k, v in adoption.plain.items()}
    stack_file.write_text(yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=1 << 16))
    for path, value in adoption.secrets.items():
        engine.set_value(path, value, secret=True)


# -- the command ----------------------------------------------------------------------------------


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    args.from_ip = parse_ip(args.from_ip)
    project_dir = Path(args.project_dir)
    stack_file = stack_file_path(args.stack, project_dir)
    if stack_file.exists() and not args.force:
        raise CliError(f"{stack_file} exists: pass --force to overwrite its config")
    key = resolve_local_path(args.ssh_key, project_dir) if args.ssh_key else None
    if key is not None and not key.is_file():
        raise CliError(f"--ssh-key: SSH key {key} does not exist")
    password_file = (resolve_local_path(args.ssh_password_file, project_dir)
                     if args.ssh_password_file else None)
    if password_file is not None and not password_file.is_file():
        raise CliError(f"--ssh-password-file: {password_file} does not exist")

    scanned = keyscan({args.from_ip: args.port})
    seen = scanned.get(args.from_ip)
    if args.host_key:
        wanted = " ".join(args.host_key.split()[:2])
        if seen is not None and seen.split()[0] == wanted.split()[0] and seen != wanted:
            raise CliError(f"master0 {args.from_ip} presents {fingerprint(seen)}, not the "
                           f"--host-key {fingerprint(wanted)}")
        seen = wanted
    if seen is None:
        raise CliError(f"master0 {args.from_ip}:{args.port} does not answer ssh-keyscan within "
                       f"{KEYSCAN_TIMEOUT_S}s")

    notes: list[str] = []
    configmaps, why = read_configmaps_api(resolve_local_path(args.kubeconfig, project_dir))
    if configmaps is None:
        notes.append(f"the cluster's ConfigMaps were read with kubectl on master0: {why}")
    with tempfile.TemporaryDirectory(prefix="sealer-adopt-") as tmp:
        master0 = Master0(args.from_ip, args.user, args.port, key, seen, Path(tmp), password_file)
        extra = ["--clusterfile", args.clusterfile] if args.clusterfile else []
        files = master0.read(*extra, *([] if configmaps is not None else ["--kubectl"]))
        if configmaps is None:
            configmaps, problems = configmaps_from_master0(files)
            notes += [f"{p}: read as absent; if the cluster has it, adopt again with a "
                      "--kubeconfig that reaches the apiserver" for p in problems]
        where = files.meta.get("clusterfile")
        text = choose_clusterfile(files.clusterfile, str(where), configmaps["sealer-clusterfile"],
                                  notes)
        try:
            cf = parse_clusterfile(text)
        except ClusterfileError as e:
            source = ("ConfigMap kube-system/sealer-clusterfile"
                      if configmaps["sealer-clusterfile"] is not None else f"{where} on master0")
            raise CliError(f"the Clusterfile {source} {e}") from None
        # One session unless the script's reading of the Clusterfile (awk) missed the rootfs or
        # a key: then once more with the paths parsed here.
        keys = sorted({s.pk for s in cf.hosts_ssh.values() if s.pk})
        missing_keys = not set(keys) <= set(files.files)
        if files.meta.get("rootfs") != cf.rootfs or missing_keys:
            again = ["--clusterfile", files.meta["clusterfile"], "--rootfs", cf.rootfs]
            clusterfile_text = files.clusterfile
            files = master0.read(*again, *(a for path in keys for a in ("--file", path)))
            files.clusterfile = clusterfile_text

    host_keys = {args.from_ip: seen}
    host_keys.update(keyscan({ip: cf.hosts_ssh[ip].port for ip in cf.hosts if ip != args.from_ip}))
    node = None
    if configmaps["sealer-registry"] is None:
        node = read_probe_host(cf, files, args, key, password_file, host_keys, notes)
    adoption = build_adoption(cf, files, args, host_keys, configmaps["sealer-registry"], notes, node)
    check_offline(adoption, project_dir)

    engine = Engine(args.stack, project_dir, args.pulumi, create=True)
    saved = stack_file.read_bytes() if stack_file.exists() else None
    try:
        write_stack(engine, stack_file, adoption)
        load_stack_file(stack_file, check_files=True)
    except BaseException as e:
        # Nothing left behind: the file as it was, and no stack this command created.
        if engine.created:
            try:
                engine.remove_stack()
            except CliError:
                pass
        if saved is not None:
            stack_file.write_bytes(saved)
        else:
            stack_file.unlink(missing_ok=True)
        if isinstance(e, ConfigError):
            raise CliError("the written stack file does not validate:\n" + "\n".join(e.lines())) from None
        raise

    report(args, cf, adoption, host_keys, engine.created)
    return EXIT_OK


def read_probe_host(cf: Clusterfile, files: SealerFiles, args: argparse.Namespace,
                    key: Path | None, password_file: Path | None, host_keys: dict[str, str],
                    notes: list[str]) -> NodeFacts | None:
    """What one more host shows of the registry mode (`probe_host`), read as master0 was, also
    offering the Clusterfile's key; None (with a note) when it cannot be read."""
    ip = probe_host(cf)
    if ip is None or ip not in host_keys:
        if ip is not None:
            notes.append(f"{ip} did not answer ssh-keyscan: the registry mode is not checked there")
        return None
    with tempfile.TemporaryDirectory(prefix="sealer-adopt-") as tmp:
        extra: tuple[Path, ...] = ()
        sealer_key = files.files.get(cf.hosts_ssh[ip].pk)
        if sealer_key:
            path = Path(tmp, "sealer-key")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(sealer_key.rstrip("\n") + "\n")
            extra = (path,)
        ssh = cf.hosts_ssh[ip]
        # As sealer reaches it: the Clusterfile's user, its key beside the operator's.
        host = Master0(ip, ssh.user, ssh.port, key, host_keys[ip], Path(tmp), password_file, extra)
        domain = cf.registry.domain
        if not cf.registry.local_given and files.registry_settings is not None:
            try:
                domain = parse_registry_settings(files.registry_settings).domain
            except ClusterfileError:
                pass  # reported by build_adoption
        try:
            return host.read_node(domain)
        except CliError as e:
            notes.append(f"the registry mode was not checked on {ip} ({e})")
            return None


def report(args: argparse.Namespace, cf: Clusterfile, adoption: Adoption,
           host_keys: dict[str, str], created: bool) -> None:
    reg = adoption.plain["registry"]
    print(f"ok: stack {args.stack}{' (created)' if created else ''}: cluster {cf.name}, master0 "
          f"{cf.master0}, {len(cf.masters)} masters, {len(cf.nodes)} nodes, registry "
          f"{reg['domain']}:{reg['port']}"
          f"{', login ' + reg['username'] if 'username' in reg else ''}")
    print(f"  secrets set through the engine: {', '.join(sorted(adoption.secrets)) or 'none'}")
    for ip in cf.hosts:
        if ip in host_keys:
            print(f"  host key {ip}: {host_keys[ip].split()[0]} {fingerprint(host_keys[ip])}")
    for note in adoption.notes:
        print(f"note: {note}")
    print(f"next: python -m cli validate --stack {shlex.quote(args.stack)}; pulumi preview "
          f"--stack {shlex.quote(args.stack)}; pulumi up --stack {shlex.quote(args.stack)}")
