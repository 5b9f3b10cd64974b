"""Security and bad input against the real program, engine and lab (issue 7, marker `faults`).

The recovery-time faults (master0 blackholed during the recovery, old master0 revived) are proven
in lifecycle.py; here: bad stack configs refused at preview without contacting any host, secrets
kept out of process lists, engine output, state and ConfigMaps, and the registry's auth and TLS.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import queue
import subprocess
import threading
import time

import pytest
import yaml

from lab.hosts import INSTANCE
from lab.stack import DOMAIN, PORT, PROJECT_DIR, SECRETS, ProgramStack, stack_values
from tests.e2e.kube import Kube
from tests.e2e.labstack import lab_env  # noqa: F401  (module-scoped lab of 3 masters + 2 nodes)
from tests.unit.test_config_invalid_stacks import APP0_IMG, APP1_IMG, CASES, _apply

pytestmark = pytest.mark.faults

NEW_PASSWORD = "Rotated-Secret-7c1e"
# Cases whose edit plants an undecryptable placeholder would fail in the engine's decryption,
# before the program runs; the rest must be refused by the program itself.
ENGINE_CASES = [c for c in CASES if "secure" not in json.dumps(c[1], default=str)]


def _on_this_lab(value, lab_env=None):  # noqa: F811
    """The table's lab values on this lab: its addresses (instance 0's 198.18.0.x) on this lab
    instance's subnet, Pulumi.dev.yaml's boot-history image ids as this lab's (the apps in order),
    and its key file (a file that is not PEM certificates) as this lab's."""
    if isinstance(value, str):
        value = value.replace("198.18.0.", f"198.18.{INSTANCE}.")
        if lab_env is not None:
            ids = [a["image_id"] for a in json.loads(lab_env.history_file.read_text())["applications"]]
            for fake, real in zip((APP0_IMG, APP1_IMG), ids):
                value = value.replace(fake, real)
            value = value.replace(".lab/id_ed25519", str(lab_env.key_path))
        return value
    if isinstance(value, list):
        return [_on_this_lab(v, lab_env) for v in value]
    if isinstance(value, dict):
        return {_on_this_lab(k, lab_env): _on_this_lab(v, lab_env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def stack(lab_env, toolchain_env):  # noqa: F811
    """A deployed stack with an inline boot history (the shape of Pulumi.dev.yaml's cases)."""
    stack = ProgramStack("e2e-faults", toolchain_env)
    values = stack_values(lab_env, master0=lab_env.masters[0],
                          deploy_hosts=lab_env.masters[:2])
    values["apps"]["history"] = json.loads(lab_env.history_file.read_text())
    del values["apps"]["history_file"]
    stack.configure(values, {**SECRETS, "registry.tls.ca_key": lab_env.ca[1]})
    stack.up()
    yield stack
    stack.remove()


def test_table_has_forty_cases_the_engine_can_see():
    assert len(ENGINE_CASES) >= 40


def all_packets(lab_env) -> int:  # noqa: F811
    return sum(lab_env.lab.packets_to(ip) for ip in lab_env.all_ips)


# Previews of the table run this many at a time, each on a copy of the deployed stack (its stack
# file and its state): a preview takes no lock on a file backend, but the program reads its own
# stack's file (`load_stack_file`), so a case needs a stack of its own while its preview runs.
# One after the other (lab instance 5, other labs loading the 2 cores): 11.9 s each on average,
# 1104 s for 93; 4 at a time: 217.5 s and 266.0 s. Each preview's timeout is 300 s (it was 120 s alone).
PREVIEW_JOBS = 4


def _preview_copies(stack, count: int) -> list[ProgramStack]:
    """``count`` stacks with the deployed stack's file and state (`pulumi stack export | import`,
    the URNs naming the copy: the engine refuses a resource from another stack)."""
    state = stack.export()
    copies = []
    try:
        for i in range(count):
            copy = ProgramStack(f"{stack.name}-preview{i}", stack.env)
            copies.append(copy)
            copy.stack_file.write_text(stack.stack_file.read_text())  # its encryptionsalt included
            subprocess.run(["pulumi", "stack", "import", "--stack", copy.name],
                           input=state.replace(f"urn:pulumi:{stack.name}::", f"urn:pulumi:{copy.name}::"),
                           cwd=PROJECT_DIR, env=stack.env, capture_output=True, text=True, check=True)
    except BaseException:
        for copy in copies:  # no stack file left in the project dir
            copy.remove()
        raise
    return copies


@pytest.fixture(scope="module")
def refused_previews(lab_env, stack):  # noqa: F811
    """Every case of the table previewed on the deployed stack's state, PREVIEW_JOBS at a time:
    ``(outputs, packets)``, ``outputs[case_id] = (returncode, stdout + stderr)`` and the frames
    that reached any host while the batch ran (none may)."""
    good = stack.stack_file.read_text()
    doc = yaml.safe_load(good)
    copies = _preview_copies(stack, PREVIEW_JOBS)
    free = queue.SimpleQueue()
    for copy in copies:
        free.put(copy)

    def preview(case) -> tuple[str, tuple[int, str]]:
        case_id, edits = case[0], _on_this_lab(case[1], lab_env)
        copy = free.get()
        try:
            copy.stack_file.write_text(yaml.safe_dump(_apply(doc, edits), sort_keys=False))
            done = subprocess.run(["pulumi", "preview", "--non-interactive", "--stack", copy.name],
                                  cwd=PROJECT_DIR, env=copy.env, capture_output=True, text=True,
                                  timeout=300)
        finally:
            copy.stack_file.write_text(good)
            free.put(copy)
        return case_id, (done.returncode, done.stdout + done.stderr)

    before, start = all_packets(lab_env), time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=PREVIEW_JOBS) as pool:
            outputs = dict(pool.map(preview, ENGINE_CASES))
        packets = all_packets(lab_env) - before
        print(f"\n{len(outputs)} previews, {PREVIEW_JOBS} at a time: "
              f"{time.monotonic() - start:.1f}s, {packets} packets to the hosts")
    finally:
        for copy in copies:
            copy.remove()
    return outputs, packets


@pytest.mark.parametrize("case_id, edits, path, fragment", ENGINE_CASES,
                         ids=[c[0] for c in ENGINE_CASES])
def test_bad_config_is_refused_by_preview_naming_the_field(lab_env, refused_previews, case_id,  # noqa: F811
                                                           edits, path, fragment):
    """`pulumi preview` of an invalid config fails naming the field — the program's
    `error: <field>: ...`, or the engine's own check of Pulumi.yaml's declared types and required
    keys, which runs first — and not one packet reaches any host (counted over the whole batch of
    previews, so over this one too)."""
    fragment, path = _on_this_lab(fragment, lab_env), _on_this_lab(path, lab_env)
    outputs, packets = refused_previews
    returncode, output = outputs[case_id]
    assert returncode != 0
    top = path.split(".")[0].split("[")[0]
    by_program = f"error: {path}: " in output and fragment in output
    by_engine = "error: validating stack config" in output and f"'{top}'" in output
    assert by_program or by_engine, output[-3000:]
    assert packets == 0


class ProcessWatch:
    """Samples every process's command line on the machine (lab hosts share its PID view) while
    a run is under way."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.seen.update(out.splitlines())
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_secrets_stay_out_of_processes_output_state_and_configmaps(lab_env, stack):  # noqa: F811
    """Rotating the password (set on stdin, then a new htpasswd on every deploy host, a restart, a
    verification): the password, the htpasswd hash, the CA key and the SSH key appear in no process's command
    line during the run, in no engine output, not in `pulumi stack export`, in no ConfigMap."""
    with ProcessWatch() as watch:
        stack.set_secret("registry.password", NEW_PASSWORD)
        report = stack.up()
    assert f"rootfs-{lab_env.masters[0]}" in report.changed()
    kube = Kube(lab_env.kubeconfig)
    htpasswd = base64.b64decode(kube.secret("sealer-registry")["data"]["htpasswd"]).decode()
    secrets = {
        "password": NEW_PASSWORD,
        "htpasswd hash": htpasswd.split(":", 1)[1].strip(),
        "CA key": lab_env.ca[1].splitlines()[1],
        "SSH key": lab_env.key_path.read_text().splitlines()[1],
    }
    configmaps = json.dumps([kube.configmap("sealer-registry"), kube.configmap("sealer-apps")])
    places = {"process list": "\n".join(watch.seen), "engine output": report.stdout,
              "stack export": stack.export(), "ConfigMaps": configmaps}
    leaks = [(what, where) for what, value in secrets.items()
             for where, text in places.items() if value in text]
    assert leaks == []
    assert len(watch.seen) > 50  # the sampler did see the run's processes


def curl_code(lab_env, ip, args: str) -> str:  # noqa: F811
    return lab_env.lab.run(ip, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {args}",
                           check=False).stdout.strip()


def test_anonymous_pull_and_push_are_refused(lab_env, stack):  # noqa: F811
    """With auth configured, a client without credentials gets 401 for /v2/, a manifest and a
    blob upload (push)."""
    node = lab_env.nodes[0]
    ca = f"--cacert /etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt"
    base = f"https://{DOMAIN}:{PORT}/v2"
    repo, tag = lab_env.refs[0].split("@")[0].rsplit(":", 1)
    assert curl_code(lab_env, node, f"{ca} {base}/") == "401"
    assert curl_code(lab_env, node, f"{ca} {base}/{repo}/manifests/{tag}") == "401"
    assert curl_code(lab_env, node, f"{ca} -X POST {base}/{repo}/blobs/uploads/") == "401"


def test_tls_verifies_with_the_ca_for_the_domain_and_every_deploy_ip(lab_env, stack):  # noqa: F811
    """A client trusting only the CA verifies the registry's certificate for the domain and for
    each deploy host's IP (IP SANs, not sealer's DNS-for-IP), live for master0's IP."""
    m0 = lab_env.masters[0]
    leaf = f"{lab_env.rootfs}/certs/{DOMAIN}.crt"
    lab_env.lab.run(m0, "cat > /tmp/ca.crt", input=lab_env.ca[0])
    checks = [f"-verify_hostname {DOMAIN}", *(f"-verify_ip {ip}" for ip in lab_env.masters[:2])]
    for check in checks:
        done = lab_env.lab.run(m0, f"openssl verify -CAfile /tmp/ca.crt {check} {leaf}", check=False)
        assert done.returncode == 0 and ": OK" in done.stdout, (check, done.stdout, done.stderr)
    wrong = lab_env.lab.run(m0, f"openssl verify -CAfile /tmp/ca.crt -verify_ip {lab_env.nodes[0]} {leaf}",
                            check=False)
    assert wrong.returncode != 0  # a host that is not a deploy host is not in the certificate
    node = lab_env.nodes[0]
    lab_env.lab.run(node, "cat > /tmp/ca.crt", input=lab_env.ca[0])
    assert curl_code(lab_env, node, f"--cacert /tmp/ca.crt https://{m0}:{PORT}/v2/") == "401"


def test_sigint_mid_recovery_then_rerun_converges(lab_env, stack):  # noqa: F811
    """master0 dies; `pulumi up` of the recovery is interrupted with SIGINT once its first host
    step starts; the rerun converges: registry on the new master0, every live host points at
    it, no packet to the dead one, and a third `up` changes nothing."""
    import signal

    from tests.e2e.lifecycle import hosts_line, registry_running

    old, new = lab_env.masters[0], lab_env.masters[1]
    lab_env.lab.kill(old)
    before = lab_env.lab.packets_to(old)
    stack.set("master0", new)
    stack.set("down_hosts", [old])
    up = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive",
                           "--stack", stack.name], cwd=PROJECT_DIR, env=stack.env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in up.stdout:
        seen.append(line)
        if "node-" in line and "updating" in line:
            up.send_signal(signal.SIGINT)
            break
    rest, _ = up.communicate(timeout=120)
    interrupted = "".join(seen) + rest
    assert up.returncode != 0, interrupted[-2000:]
    print(interrupted[-1500:])
    report = stack.up()
    assert registry_running(lab_env.lab, new)
    for ip in lab_env.all_ips:
        if ip != old:
            assert hosts_line(lab_env.lab, ip) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
    assert report.changed(), "the rerun had work left: the SIGINT did land mid-recovery"
    assert stack.up().changed() == {}
    assert lab_env.lab.packets_to(old) == before


def test_up_fails_when_an_image_does_not_resolve_from_a_node(lab_env, stack):  # noqa: F811
    """The verification is a real gate: with one image's tag pointing nowhere in master0's
    registry, an `up` that verifies fails naming the image; once the data is back it passes again.
    The tag's link file keeps its path and size (a digest of the same length), so master0's tree
    listing is unchanged: a moved or deleted tag would change it, and the program's probe of
    master0's tree would then rerun its fill from the image store, which puts the tag back."""
    from pulumi.automation import CommandError

    m0 = stack.outputs()["master0"]
    repo_tag = lab_env.refs[-1].split("@")[0]
    repo, tag = repo_tag.rsplit(":", 1)
    link = (f"{lab_env.rootfs}/registry/docker/registry/v2/repositories/{repo}/_manifests/tags/"
            f"{tag}/current/link")
    verify_urn = next(r["urn"] for r in json.loads(stack.export())["deployment"]["resources"]
                      if r["urn"].endswith("::registry-verify"))
    saved = "/root/e2e-tag-link.saved"  # outside the registry tree
    lab_env.lab.run(m0, f"cp -p {link} {saved} && printf sha256:%064d 0 > {link} && "
                        f"touch -r {saved} {link}")
    try:
        with pytest.raises(CommandError) as failed:
            stack.stack.up(replace=[verify_urn], color="never")
    finally:
        lab_env.lab.run(m0, f"cp -p {saved} {link} && rm -f {saved}")
    assert f"{repo}:{tag} resolves to" in str(failed.value)
    stack.stack.up(replace=[verify_urn], color="never")


def test_a_tag_removed_from_master0_is_put_back_from_the_store_by_the_next_up(lab_env, stack):  # noqa: F811
    """master0's tree changed behind the program's back (a tag gone): the probe of its tree at
    program time reruns master0's fill from the image store, which copies the missing ref back,
    and the replicas' steps run again; the `up` verifies, and the next `up` changes nothing."""
    m0 = stack.outputs()["master0"]
    repo_tag, digest = lab_env.refs[-1].split("@")
    repo, tag = repo_tag.rsplit(":", 1)
    tags = f"{lab_env.rootfs}/registry/docker/registry/v2/repositories/{repo}/_manifests/tags"
    lab_env.lab.run(m0, f"rm -rf {tags}/{tag}")
    report = stack.up()
    assert f"data-{m0}" in report.changed(), report.changed()
    assert lab_env.lab.run(m0, f"cat {tags}/{tag}/current/link").stdout == digest
    assert stack.up().changed() == {}
