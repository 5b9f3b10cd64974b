"""The lab's sealer-made clusters (lab/sealer_state.py) in the three flavours are what sealer's source
leaves: its files read back the way sealer reads them, the registries answer on the hosts sealer
starts them on, the hosts map the domain as sealer does, and a node pulls through `sea.hub:5000`
with the engine it runs, trusting only what sealer wrote for it."""
from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cli.clusterfile import decrypt_passwd
from components.deploy_host import material_fingerprint, rootfs_files, rootfs_payload
from components.remote_scripts import script_run
from lab import images, toolchain
from lab import sealer_files as sf
from lab.sealer_files import BASEFS_REGISTRY_CONFIG, Flavour, split_application_log
from lab.sealer_state import make_sealer_state, parse_clusterfile, pull
from material import build_material

HEX = set("0123456789abcdef")


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    from lab import Lab

    Lab().down()
    lab = Lab(tmp_path_factory.mktemp("lab-state"))
    lab.up(masters=2, nodes=2)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    gen = images.generate(path, apps=2, app_size=128 << 10, layers=1, cluster_size=256 << 10,
                          seed=3, history=None)
    return path, gen


def refs_of(gen) -> list[dict]:
    return [r for img in [gen["cluster"], *gen["apps"]] for r in img["refs"]]


@pytest.fixture(scope="module", params=[f.value for f in Flavour])
def sealer(request, small_lab, store):
    path, gen = store
    ids = [gen["cluster_image_id"], *(a["image_id"] for a in gen["apps"])]
    state = make_sealer_state(small_lab, flavour=request.param, history=gen["application"],
                              store=path, image_ids=ids)
    return state, gen


def host_file(lab, host: str, path: str) -> Path:
    return lab.host_path(host, path)


def fetch(lab, host: str, state, path: str, creds: bool = True, at: str | None = None):
    """HTTP status of GET https://<domain>:<port><path> from ``host`` (at ``at``'s IP when given),
    trusting the cert sealer installed there; the credentials go to curl on stdin."""
    auth = "-K -" if creds else ""
    resolve = f"--resolve {state.domain}:{state.port}:{at}" if at else ""
    out = lab.run(host, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {resolve} "
                        f"--cacert {state.trust_files[host]} {auth} "
                        f"-H 'Accept: application/vnd.oci.image.manifest.v1+json' "
                        f"https://{state.domain}:{state.port}{path}",
                  input=f'user = "{state.username}:{state.password}"\n' if creds else "", check=False)
    return out.stdout.strip()


# -- files ----------------------------------------------------------------------------------------


def test_clusterfile_reads_back_as_sealer_reads_it(small_lab, sealer):
    """v0.11: Cluster then the Application document with apiVersion/kind swapped, `spec.ssh` with
    pk and the plaintext passwd, `localRegistry.ha` per mode. v0.8: the Cluster alone under
    ~/.sealer/<name>/, sealer.cloud/v2, master0's two roles, passwd AES-encrypted."""
    state, _ = sealer
    text = host_file(small_lab, state.master0, state.clusterfile_path).read_text()
    assert text == state.clusterfile
    docs = parse_clusterfile(text)
    cluster = docs[0]
    ssh = cluster["spec"]["ssh"]
    assert ssh["pk"] == state.ssh_pk and ssh["user"] == state.ssh_user and ssh["port"] == "22"
    hosts = cluster["spec"]["hosts"]
    by_role = {role: [ip for h in hosts if role in h["roles"] for ip in h["ips"]]
               for role in ("master", "node")}
    assert by_role == {"master": state.masters, "node": state.nodes}
    if state.flavour is Flavour.V08:
        assert state.clusterfile_path == f"/root/.sealer/{state.name}/Clusterfile"
        assert len(docs) == 1 and cluster["apiVersion"] == "sealer.cloud/v2"
        assert hosts[0] == {"ips": [state.master0], "roles": ["master", "master0"], "ssh": {}}
        assert ssh["encrypted"] is True and decrypt_passwd(ssh["passwd"]) == state.ssh_password
        assert "registry" not in cluster["spec"]
        return
    assert state.clusterfile_path == "/root/.sealer/Clusterfile"
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [
        ("sealer.io/v2", "Cluster"), ("Application", "sealer.io/v2")]
    assert "---\n" in text and "encrypted" not in ssh
    local = cluster["spec"]["registry"]["localRegistry"]
    assert local["ha"] is (state.flavour is Flavour.V011_HA)
    assert (local["domain"], local["port"], local["username"], local["password"]) == (
        state.domain, state.port, state.username, state.password)
    assert cluster["spec"]["image"] == state.cluster_image
    assert f"RegistryURL={state.domain}:{state.port}" in cluster["spec"]["env"]
    if state.flavour is Flavour.V011_HA:
        assert f"IPvsVIPv4={state.vip}" in cluster["spec"]["env"]


def test_application_log_is_sealers_appended_extensions(small_lab, sealer):
    """One indented ImageExtension per run, no separator (so not one JSON document), Go's HTML
    escaping, 0600; a shell app and an app with no type; v0.8 keeps none."""
    state, gen = sealer
    path = host_file(small_lab, state.master0, "/root/.sealer/application.json")
    if state.flavour is Flavour.V08:
        assert not path.exists() and state.application_log == ""
        return
    text = path.read_text()
    assert text == state.application_log and oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    objs = split_application_log(text)
    assert len(objs) == 1 + len(gen["apps"]) == len(state.image_ids)
    assert [o["type"] for o in objs] == ["kube-installer"] + ["app-installer"] * len(gen["apps"])
    apps = [a for o in objs for a in o.get("applications", [])]
    assert any(a.get("type") == "shell" for a in apps)
    assert any("type" not in a and a.get("cmds") for a in apps)
    assert "\\u0026" in text and "&" not in text
    assert all(set(o) >= {"buildClient", "schemaVersion", "launch"} for o in objs)
    assert not any("image_id" in a or "launch_cmd" in a for a in apps)


def test_cache_flags_mark_each_run_on_the_registry_hosts(small_lab, sealer):
    """`cache/registry/<64 hex>` (empty) on each registry host, one per run, mtimes in run order;
    none elsewhere; `cache/image/<id>` on every host. v0.8 writes no flags."""
    state, _ = sealer
    for ip in state.hosts:
        reg = host_file(small_lab, ip, f"{state.rootfs}/cache/registry")
        img = host_file(small_lab, ip, f"{state.rootfs}/cache/image")
        if state.flavour is Flavour.V08:
            assert not reg.exists() and not img.exists(), ip
            continue
        assert sorted(p.name for p in img.iterdir()) == sorted(state.image_ids), ip
        if ip not in state.registry_hosts:
            assert not reg.exists(), ip
            continue
        flags = sorted(reg.iterdir(), key=lambda p: p.stat().st_mtime)
        assert [p.name for p in flags] == state.image_ids, ip
        assert all(len(p.name) == 64 and set(p.name) <= HEX and p.stat().st_size == 0 for p in flags)
        mtimes = [p.stat().st_mtime for p in flags]
        assert mtimes == sorted(set(mtimes)), ip


def openssl(*args: str, stdin: str) -> str:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True,
                          check=True).stdout


def test_cert_is_sealers_ca_with_serial_zero(small_lab, sealer, tmp_path):
    state, _ = sealer
    m0 = state.master0
    crt = host_file(small_lab, m0, f"{state.rootfs}/certs/{state.domain}.crt").read_text()
    key = host_file(small_lab, m0, f"{state.rootfs}/certs/{state.domain}.key")
    assert crt == state.cert
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    info = openssl("x509", "-noout", "-serial", "-subject", "-ext", "subjectAltName,basicConstraints",
                   stdin=crt)
    assert "serial=00" in info and "CA:TRUE" in info
    if state.flavour is Flavour.V08:
        assert "O = sealer, CN = sea.hub" in info
    else:
        assert "CN = registry-ca" in info
    san = info.split("Subject Alternative Name:")[1].split("X509v3")[0].split()
    assert san == [f"DNS:{state.domain}"]
    (tmp_path / "ca.crt").write_text(crt)
    done = subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "ca.crt", tmp_path / "ca.crt"],
                          capture_output=True, text=True)
    assert done.stdout.strip().endswith(": OK"), done.stderr


def test_htpasswd_and_auth_files_are_sealers(small_lab, sealer):
    """With a login: `user:$2a$10$...` (v0.11 no newline, v0.8 echo's newline) on the registry
    hosts; every host has the login as kubelet's config.json (0600) for sealer's endpoints."""
    state, _ = sealer
    for ip in state.registry_hosts:
        text = host_file(small_lab, ip, f"{state.rootfs}/etc/registry_htpasswd").read_text()
        assert text == state.htpasswd and text.startswith(f"{state.username}:$2a$10$")
        assert text.endswith("\n") is (state.flavour is Flavour.V08)
    want = {f"{state.domain}:{state.port}"}
    for ip in state.hosts:
        path = host_file(small_lab, ip, "/var/lib/kubelet/config.json")
        assert oct(path.stat().st_mode & 0o777) == "0o600", ip
        auths = json.loads(path.read_text())["auths"]
        assert set(auths) == want, ip
        decoded = base64.b64decode(auths[f"{state.domain}:{state.port}"]["auth"]).decode()
        assert decoded == f"{state.username}:{state.password}", ip   # (never printed)
    assert not Path("/var/lib/kubelet/config.json").exists()   # the machine's own: untouched


def test_rootfs_config_files_per_flavour(small_lab, sealer):
    """v0.11: basefs' registry_config.yml on every host. v0.8: sealer's settings registry.yml on
    every host and no distribution config (the script runs the image's default)."""
    state, _ = sealer
    for ip in state.hosts:
        cfg = host_file(small_lab, ip, f"{state.rootfs}/etc/registry_config.yml")
        settings = host_file(small_lab, ip, f"{state.rootfs}/etc/registry.yml")
        if state.flavour is Flavour.V08:
            assert not cfg.exists(), ip
            doc = yaml.safe_load(settings.read_text())
            assert doc == {"domain": state.domain, "port": str(state.port),
                           "username": state.username, "password": state.password}, ip
        else:
            assert cfg.read_text() == BASEFS_REGISTRY_CONFIG and not settings.exists(), ip


def test_ha_nodes_have_sealers_lvscare_manifest(small_lab, sealer):
    state, _ = sealer
    for ip in state.hosts:
        path = host_file(small_lab, ip, sf.LVSCARE_MANIFEST)
        if state.flavour is not Flavour.V011_HA or ip in state.masters:
            assert not path.exists(), ip
            continue
        pod = yaml.safe_load(path.read_text())
        args = pod["spec"]["containers"][0]["args"]
        assert args[:3] == ["care", "--vs", f"{state.vip}:{state.port}"]
        assert [args[i + 1] for i, a in enumerate(args) if a == "--rs"] == sorted(
            f"{m}:{state.port}" for m in state.masters)
        assert pod["metadata"] == {"creationTimestamp": None, "name": "reg-lvscare",
                                   "namespace": "kube-system"}


# -- hosts, registries, pulls ----------------------------------------------------------------------


def test_hosts_map_the_domain_as_sealer_does(small_lab, sealer):
    """HA: masters to themselves, nodes to the VIP; non-HA: master0, marked; v0.8: unmarked."""
    state, _ = sealer
    for ip in state.hosts:
        lines = [line for line in small_lab.run(ip, "cat /etc/hosts").stdout.splitlines()
                 if f" {state.domain} " in f"{line} "]
        assert lines == [state.hosts_line(ip)], ip
    if state.flavour is Flavour.V011_HA:
        assert state.hosts_line(state.nodes[0]).split()[0] == state.vip
        assert state.hosts_line(state.masters[1]).split()[0] == state.masters[1]
    elif state.flavour is Flavour.V08:
        assert state.hosts_line(state.nodes[0]) == f"{state.master0} {state.domain}"


def test_registries_answer_on_the_registry_hosts_only(small_lab, sealer):
    """Every registry host serves every image with sealer's cert and login; other hosts serve
    nothing on the port."""
    state, gen = sealer
    client = state.nodes[0]
    for ip in state.hosts:
        if ip in state.registry_hosts:
            assert fetch(small_lab, client, state, "/v2/", at=ip) == "200", ip
            assert fetch(small_lab, client, state, "/v2/", creds=False, at=ip) == "401", ip
            for ref in refs_of(gen):
                path = f"/v2/{ref['repository']}/manifests/{ref['digest']}"
                assert fetch(small_lab, client, state, path, at=ip) == "200", (ip, ref)
        else:
            assert fetch(small_lab, client, state, "/v2/", at=ip) == "000", ip
    assert state.registry_hosts == (state.masters if state.flavour is Flavour.V011_HA
                                    else [state.master0])


def test_a_containerd_node_pulls_through_the_domain(small_lab, sealer):
    """basefs' containerd (config_path /etc/docker/certs.d/) finds the CA sealer wrote for the
    cluster's docker runtime and pulls every image through `<domain>:<port>` with the login. In
    HA the node's domain is the VIP (lab/vip.py), so the pull needs it."""
    state, gen = sealer
    node = next(ip for ip in state.nodes if state.runtimes[ip] == "containerd-basefs")
    for ref in refs_of(gen):
        got = pull(small_lab, state, node, f"{ref['repository']}:{ref['tag']}")
        assert got.ok and got.digest == ref["digest"], got.stderr[-2000:]


def test_a_master_pulls_from_its_own_registry(small_lab, sealer):
    """HA masters map the domain to themselves: each pulls from its own registry."""
    state, gen = sealer
    ref = refs_of(gen)[-1]
    for ip in state.registry_hosts:
        got = pull(small_lab, state, ip, f"{ref['repository']}:{ref['tag']}")
        assert got.ok and got.digest == ref["digest"], (ip, got.stderr[-2000:])


def test_a_docker_node_pulls_through_the_domain(small_lab, sealer):
    state, gen = sealer
    docker_nodes = [ip for ip in state.nodes if state.runtimes[ip] == "docker"]
    assert docker_nodes, state.runtimes
    ref = refs_of(gen)[0]
    got = pull(small_lab, state, docker_nodes[0], f"{ref['repository']}:{ref['tag']}")
    assert got.ok and got.digest == ref["digest"], got.stderr[-2000:]


def test_the_hosts_accept_the_clusterfiles_password(small_lab, sealer, tmp_path):
    """sealer tries the key and the password: the hosts take the password it recorded (given to
    ssh by an askpass helper reading a 0600 file, never in argv)."""
    state, _ = sealer
    ip = state.nodes[-1]
    secret = tmp_path / "password"
    secret.write_text(state.ssh_password)
    secret.chmod(0o600)
    helper = tmp_path / "askpass"
    helper.write_text(f"#!/bin/sh\nexec cat '{secret}'\n")
    helper.chmod(0o700)
    argv = ["ssh", "-F", "none", "-o", f"UserKnownHostsFile={small_lab.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
            "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=5",
            f"{state.ssh_user}@{ip}", "true"]
    env = {"PATH": "/usr/bin:/bin", "SSH_ASKPASS": str(helper), "SSH_ASKPASS_REQUIRE": "force",
           "DISPLAY": ":0"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-500:]
    secret.write_text(state.ssh_password + "-wrong")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and "Permission denied" in done.stderr


# -- the program's launch step on the v0.11 non-HA cluster sealer left -----------------------------


def registry_pid(lab, host: str) -> int | None:
    pids = [pid for pid in lab.pids(host)
            if b"docker-registry\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(pids) <= 1, pids
    return pids[0] if pids else None


def program_steps(lab, state, material):
    """The program's rootfs and launch steps on master0, as its host steps run them."""
    payload = rootfs_payload(rootfs_files(material, state.domain))
    wrote = script_run("write-rootfs.sh", state.rootfs, data=payload)
    lab.ssh(state.master0, wrote.command, input=wrote.stdin)
    fingerprint = material_fingerprint(payload)
    run = script_run("launch-registry.sh", state.rootfs, str(state.port), state.domain, fingerprint)
    return lab.ssh(state.master0, run.command, input=run.stdin)


def adopted_material(state, registry_config: str | None):
    return build_material(domain=state.domain, port=state.port, deploy_ips=[state.master0],
                          insecure=False, username=state.username, password=state.password,
                          cert=state.cert, key=state.key, htpasswd=state.htpasswd,
                          registry_config=registry_config)


@pytest.mark.parametrize("sealer", [Flavour.V011.value], indirect=True)
def test_launch_keeps_sealers_registry_when_it_serves_the_adopted_material(small_lab, sealer):
    """(v0.11) sealer's cert, key, htpasswd and registry config brought as they are: the files on
    master0 stay byte-identical and the launch step keeps sealer's registry (same pid)."""
    state, _ = sealer
    before = registry_pid(small_lab, state.master0)
    files = {p: small_lab.run(state.master0, f"stat -c '%i %Y' {state.rootfs}/{p}").stdout
             for p in ("etc/registry_config.yml", "etc/registry_htpasswd", f"certs/{state.domain}.crt")}
    out = program_steps(small_lab, state, adopted_material(state, state.registry_config))
    assert "kept it, skipped init-registry.sh" in out.stderr, out.stderr
    assert registry_pid(small_lab, state.master0) == before
    assert files == {p: small_lab.run(state.master0, f"stat -c '%i %Y' {state.rootfs}/{p}").stdout
                     for p in files}


def test_no_login_means_no_htpasswd_and_open_reads(small_lab, store):
    """`htpasswd` only when a login is set: without one sealer writes no file, no auth file, and
    the registry serves without credentials."""
    path, gen = store
    ids = [gen["cluster_image_id"], *(a["image_id"] for a in gen["apps"])]
    state = make_sealer_state(small_lab, flavour="v0.11", history=gen["application"], store=path,
                              image_ids=ids, username="", password="")
    assert state.htpasswd is None
    assert not host_file(small_lab, state.master0, f"{state.rootfs}/etc/registry_htpasswd").exists()
    assert not host_file(small_lab, state.nodes[0], "/var/lib/kubelet/config.json").exists()
    assert fetch(small_lab, state.nodes[0], state, "/v2/", creds=False) == "200"
    local = parse_clusterfile(state.clusterfile)[0]["spec"]["registry"]["localRegistry"]
    assert "username" not in local and "password" not in local


def test_a_containerd_cluster_leaves_basefs_containerd_without_sealers_ca(small_lab, store):
    """`runtime: containerd`: sealer writes the CA under /etc/containerd/certs.d
    (pkg/container-runtime/installer.go@v0.11.0:86), basefs' containerd reads /etc/docker/certs.d/:
    its pull fails x509, while a containerd reading /etc/containerd/certs.d pulls."""
    path, gen = store
    ids = [gen["cluster_image_id"], *(a["image_id"] for a in gen["apps"])]
    lab_node, basefs_node = small_lab.inventory()["hosts"][-2]["ip"], small_lab.inventory()["hosts"][-1]["ip"]
    state = make_sealer_state(small_lab, flavour="v0.11", history=gen["application"], store=path,
                              image_ids=ids, runtime="containerd",
                              runtimes={lab_node: "containerd", basefs_node: "containerd-basefs"})
    assert state.trust_files[basefs_node] == "/etc/containerd/certs.d/sea.hub:5000/sea.hub.crt"
    ref = refs_of(gen)[0]
    good = pull(small_lab, state, lab_node, f"{ref['repository']}:{ref['tag']}")
    assert good.ok and good.digest == ref["digest"], good.stderr[-2000:]
    bad = pull(small_lab, state, basefs_node, f"{ref['repository']}:{ref['tag']}", timeout=30)
    assert not bad.ok and "x509" in bad.stderr, bad.stderr[-2000:]
    cluster = parse_clusterfile(state.clusterfile)[0]
    assert cluster["spec"]["containerRuntime"] == {"type": "containerd"}
    assert "ContainerRuntime=containerd" in cluster["spec"]["env"]


# -- ConfigMaps (needs the control plane) ----------------------------------------------------------


@pytest.mark.toolchain
def test_configmaps_are_sealers_and_the_file_is_stale_by_the_users_edit(small_lab, store):
    """sealer-clusterfile holds the last save as the user edited it (the rotated passwd: only it
    opens the hosts), the file the save before the edit; sealer-registry has go-yaml v3's
    lowercase keys."""
    missing = toolchain.explain_missing("etcd", "kube-apiserver", "kube-controller-manager")
    if missing:
        pytest.fail(missing, pytrace=False)
    from lab import controlplane
    from lab.sealer_state import read_configmap
    cp = controlplane.up(small_lab, bin_dir=toolchain.bin_dir())
    path, gen = store
    ids = [gen["cluster_image_id"], *(a["image_id"] for a in gen["apps"])]
    state = make_sealer_state(small_lab, flavour="v0.11-ha", history=gen["application"],
                              store=path, image_ids=ids, cp=cp)
    cm = read_configmap(cp, "sealer-clusterfile", "Clusterfile")
    assert cm == state.clusterfile_configmap != state.clusterfile
    file_ssh = parse_clusterfile(state.clusterfile)[0]["spec"]["ssh"]
    cm_ssh = parse_clusterfile(cm)[0]["spec"]["ssh"]
    assert cm_ssh["passwd"] == state.ssh_password != file_ssh["passwd"]
    reg = yaml.safe_load(read_configmap(cp, "sealer-registry", "registry"))
    assert reg["external"] is None
    assert reg["local"]["localregistry"]["registryconfig"] == {
        "domain": state.domain, "port": state.port, "username": state.username,
        "password": state.password}
    assert reg["local"]["localregistry"]["ha"] is True
    assert reg["local"]["deployhosts"] == state.masters and reg["local"]["vip"] == state.vip
