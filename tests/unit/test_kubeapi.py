"""The apiserver the records go through (kubeapi.py) and the kubeconfig the provider gets: the
pure choice, and the whole program under Pulumi mocks (what the `k8s` provider is declared with)."""

from __future__ import annotations

import base64
import json
import runpy
from pathlib import Path

import pulumi
import pytest
import yaml

import kubeapi
from config import PROJECT, ConfigError, build_config
from test_config import DELETE, PASSWORD, PKI, assert_rejected, render
from tests.unit.pulumi_mocks import RecordingMocks

REPO = Path(__file__).resolve().parents[2]
MASTERS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]

# An operator's kubeconfig as sealer leaves it on master0 (admin.conf): the server is the
# control-plane name, with a second cluster the provider must leave alone.
KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "kubernetes-admin@kubernetes",
    "clusters": [
        {"name": "kubernetes", "cluster": {"server": "https://apiserver.cluster.local:6443",
                                           "certificate-authority-data": "Q0EtREFUQQ=="}},
        {"name": "other", "cluster": {"server": "https://10.9.9.9:6443"}},
    ],
    "contexts": [
        {"name": "kubernetes-admin@kubernetes", "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}},
        {"name": "other", "context": {"cluster": "other", "user": "kubernetes-admin"}},
    ],
    "users": [{"name": "kubernetes-admin", "user": {"client-certificate-data": "Q0VSVA==",
                                                    "client-key-data": "S0VZ"}}],
}
KUBECONFIG_TEXT = yaml.safe_dump(KUBECONFIG)


def clusters(text: str) -> dict[str, dict]:
    return {c["name"]: c["cluster"] for c in yaml.safe_load(text)["clusters"]}


# -- the choice -------------------------------------------------------------------------------


def test_default_candidates_are_master0_then_the_other_masters_in_config_order():
    """Without kubernetes.endpoints every master's https://<ip>:6443 is a candidate: the
    registry's master0 first, then the others in config order."""
    assert kubeapi.candidates(MASTERS, []) == [f"https://{ip}:6443" for ip in MASTERS]
    assert kubeapi.candidates(MASTERS, [], master0=MASTERS[1]) == [
        f"https://{ip}:6443" for ip in (MASTERS[1], MASTERS[0], MASTERS[2])]


def test_a_down_master_is_no_candidate():
    """A master in down_hosts is never used: the records go through the next one."""
    assert kubeapi.candidates(MASTERS, [MASTERS[0]]) == [f"https://{ip}:6443" for ip in MASTERS[1:]]


def test_configured_endpoints_replace_the_masters_and_keep_their_order():
    """kubernetes.endpoints is used as given (a VIP, a name, a master), minus down hosts."""
    endpoints = ["https://198.18.0.12:6443", "https://lb.example.com", "https://198.18.0.11:6443"]
    assert kubeapi.candidates(MASTERS, ["198.18.0.12"], endpoints) == endpoints[1:]


def test_choose_follows_master0_and_skips_down_hosts():
    """After a recovery the records go through the new master0's apiserver; when the old master0
    rejoins (off down_hosts) they stay there; a change about to set master0 and down_hosts (what
    `recover` checks) is judged with those values."""
    config = build_config(render(down_hosts=[MASTERS[0]], master0=MASTERS[1]))
    assert kubeapi.choose(config) == "https://198.18.0.12:6443"
    assert kubeapi.choose(config, down_hosts=[]) == "https://198.18.0.12:6443"
    assert kubeapi.choose(config, down_hosts=[MASTERS[0], MASTERS[1]]) == "https://198.18.0.13:6443"
    assert kubeapi.choose(build_config(render()), [MASTERS[0]], master0=MASTERS[2]) == "https://198.18.0.13:6443"


def test_choose_refuses_when_every_endpoint_is_down():
    """A change about to mark the host of every configured endpoint down (what `recover` checks
    before it writes anything): a config error naming the key, not an `up` that fails at the
    records."""
    config = build_config(render(master0=MASTERS[1],
                                 kubernetes__endpoints=[f"https://{MASTERS[0]}:6443"]))
    with pytest.raises(ConfigError) as info:
        kubeapi.choose(config, down_hosts=[MASTERS[0]])
    assert info.value.paths() == ["kubernetes.endpoints"]
    assert "no apiserver left" in info.value.problems[0].message


# -- the provider's kubeconfig ----------------------------------------------------------------


def test_provider_kubeconfig_changes_only_the_contexts_server():
    """The current context's cluster gets the endpoint; credentials, CA, other clusters and
    contexts are the operator's."""
    out = yaml.safe_load(kubeapi.provider_kubeconfig(KUBECONFIG_TEXT, None, "https://198.18.0.12:6443"))
    assert clusters(yaml.safe_dump(out))["kubernetes"] == {
        "server": "https://198.18.0.12:6443", "certificate-authority-data": "Q0EtREFUQQ=="}
    assert clusters(yaml.safe_dump(out))["other"] == {"server": "https://10.9.9.9:6443"}
    assert out["users"] == KUBECONFIG["users"] and out["contexts"] == KUBECONFIG["contexts"]
    assert out["current-context"] == KUBECONFIG["current-context"]


def test_provider_kubeconfig_follows_the_configured_context_and_keeps_tls_server_name():
    """kubernetes.context selects the cluster; a tls-server-name the operator set stays (TLS is
    then verified against that name)."""
    doc = json.loads(json.dumps(KUBECONFIG))
    doc["clusters"][1]["cluster"]["tls-server-name"] = "apiserver.cluster.local"
    out = clusters(kubeapi.provider_kubeconfig(yaml.safe_dump(doc), "other", "https://10.0.0.2:6443"))
    assert out["other"] == {"server": "https://10.0.0.2:6443", "tls-server-name": "apiserver.cluster.local"}
    assert out["kubernetes"]["server"] == "https://apiserver.cluster.local:6443"


@pytest.mark.parametrize("text, context, fragment", [
    ("not: [a kubeconfig", None, "is not a kubeconfig"),
    ("apiVersion: v1\nkind: Config\n", None, "is not a kubeconfig"),
    (KUBECONFIG_TEXT, "prod", "context 'prod' is not in the kubeconfig (contexts: kubernetes-admin@kubernetes, other)"),
    (KUBECONFIG_TEXT.replace("cluster: other", "cluster: gone"), "other", "cluster 'gone' of context 'other'"),
])
def test_unusable_kubeconfig_is_refused_without_quoting_it(text, context, fragment):
    with pytest.raises(ValueError) as info:
        kubeapi.provider_kubeconfig(text, context, "https://198.18.0.12:6443")
    assert fragment in str(info.value)
    assert "Q0VSVA==" not in str(info.value)


# -- the config field -------------------------------------------------------------------------


@pytest.mark.parametrize("given, canonical", [
    ("https://198.18.0.12:6443", "https://198.18.0.12:6443"),
    ("https://APIserver.Cluster.Local:6443/", "https://apiserver.cluster.local:6443"),
    ("https://lb.example.com", "https://lb.example.com"),
    ("https://rancher.example.com/k8s/clusters/c-1", "https://rancher.example.com/k8s/clusters/c-1"),
])
def test_endpoints_accept_https_urls(given, canonical):
    config = build_config(render(kubernetes__endpoints=[given]))
    assert config.kubernetes.endpoints == [canonical]


@pytest.mark.parametrize("given, path, fragment", [
    (["http://198.18.0.12:6443"], "kubernetes.endpoints[0]", "is not an https:// URL"),
    (["198.18.0.12:6443"], "kubernetes.endpoints[0]", "is not an https:// URL"),
    (["https://198.18.0.12:99999"], "kubernetes.endpoints[0]", "is not a URL"),
    (["https://admin:pw@198.18.0.12:6443"], "kubernetes.endpoints[0]", "no user, query or fragment"),
    (["https://198.18.0.12:6443 "], "kubernetes.endpoints[0]", "spaces or control characters"),
    (["https://bad_name:6443"], "kubernetes.endpoints[0]", "neither an IP address nor a valid DNS name"),
    ([], "kubernetes.endpoints", "is empty"),
    (["https://198.18.0.12:6443", "https://198.18.0.12:6443/"], "kubernetes.endpoints[1]", "listed twice"),
])
def test_endpoints_reject_what_is_not_an_apiserver_url(given, path, fragment):
    assert_rejected(render(kubernetes__endpoints=given), path, fragment)


# -- the program under mocks ------------------------------------------------------------------


STORE_PASSWORD = "st0re-Pull-s3cret"


@pytest.fixture
def program(tmp_path, monkeypatch):
    """Runs __main__.py under recording mocks with ``overrides`` of render()'s config (local files
    made under tmp_path); returns the mocks."""
    from pulumi.runtime import config as runtime_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "kubeconfig").write_text(KUBECONFIG_TEXT)
    (tmp_path / "store-ca.pem").write_text(PKI.ca_cert)
    saved = (runtime_config.CONFIG.get(), runtime_config._SECRET_KEYS.get())

    def run(preview: bool = False, **overrides) -> RecordingMocks:
        values = render(cluster__ssh__private_key_path=str(tmp_path / "id_ed25519"),
                        kubernetes__kubeconfig_path=str(tmp_path / "kubeconfig"),
                        apps__image_store__ca_file=str(tmp_path / "store-ca.pem"),
                        apps__image_store__username="reader", apps__image_store__password=STORE_PASSWORD,
                        **overrides)
        runtime_config.set_all_config(
            {f"{PROJECT}:{k}": json.dumps(v) if isinstance(v, (dict, list)) else v
             for k, v in values.items()}, [f"{PROJECT}:registry", f"{PROJECT}:apps"])
        mocks = RecordingMocks()
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="unit", preview=preview)

        @pulumi.runtime.test
        def declare():
            runpy.run_path(str(REPO / "__main__.py"), run_name="__main__")
        declare()
        return mocks

    yield run
    runtime_config.CONFIG.set(saved[0])
    runtime_config._SECRET_KEYS.set(saved[1])


def provider(mocks: RecordingMocks):
    [k8s] = [r for r in mocks.resources if r.typ == "pulumi:providers:kubernetes"]
    return k8s


def test_program_points_the_provider_at_the_first_master(program):
    """All masters live: the provider reaches master0's apiserver by IP, with the kubeconfig's
    credentials; the kubeconfig input is secret and the cluster identifier is the cluster's."""
    k8s = provider(program())
    assert clusters(k8s.inputs["kubeconfig"])["kubernetes"]["server"] == "https://198.18.0.11:6443"
    assert yaml.safe_load(k8s.inputs["kubeconfig"])["users"] == KUBECONFIG["users"]
    assert "kubeconfig" in k8s.secret_paths
    assert k8s.inputs["clusterIdentifier"] == "my-cluster"


@pytest.mark.parametrize("preview", [False, True])
def test_program_after_recovery_reaches_a_live_master(program, preview):
    """master0 dead and on down_hosts: the provider's server is the next master, at preview too
    (chosen offline), and the cluster identifier is unchanged, so the provider is updated in
    place and no record is replaced."""
    k8s = provider(program(preview=preview, master0=MASTERS[1], down_hosts=[MASTERS[0]]))
    assert clusters(k8s.inputs["kubeconfig"])["kubernetes"]["server"] == "https://198.18.0.12:6443"
    assert k8s.inputs["clusterIdentifier"] == "my-cluster"


def test_program_uses_the_configured_endpoints(program):
    """kubernetes.endpoints wins over the masters; a down one is skipped."""
    k8s = provider(program(master0=MASTERS[1], down_hosts=[MASTERS[0]], kubernetes__endpoints=[
        "https://198.18.0.11:6443", "https://apiserver.cluster.local:6443"]))
    assert clusters(k8s.inputs["kubeconfig"])["kubernetes"]["server"] == "https://apiserver.cluster.local:6443"


def test_program_refuses_when_no_apiserver_is_left(program, capsys):
    """Every endpoint down: the program exits 2 with one error line and declares nothing."""
    with pytest.raises(SystemExit) as info:
        program(master0=MASTERS[1], down_hosts=[MASTERS[0]],
                kubernetes__endpoints=["https://198.18.0.11:6443"])
    assert info.value.code == 2
    assert "error: kubernetes.endpoints: no apiserver left" in capsys.readouterr().err


def test_program_fills_master0_from_the_configured_store_with_its_login_and_ca(program):
    """__main__ wires apps.image_store into master0's fill step: the store's address and every
    pinned ref of render()'s images on the command line (cluster image first), the store's login,
    its CA file's content, the registry's login and the cluster's CA on the secret stdin only."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    fill = program().by_name()[f"data-{MASTERS[0]}"]
    refs = [ref for image_refs in render()["apps"]["image_store"]["images"].values() for ref in image_refs]
    assert fill.typ == "command:local:Command"
    assert fill.inputs["create"].endswith(" store.example.com:443 5000 " + " ".join(refs))
    assert "stdin" in fill.secret_paths
    stdin = fill.inputs["stdin"]
    for line in (f"store-auth {b64('reader:' + STORE_PASSWORD)}", f"store-ca {b64(PKI.ca_cert)}"):
        assert f"\n{line}\n" in stdin
    # master0's registry: the machine user of the htpasswd the program wrote (cheap bcrypt).
    dest = base64.b64decode(stdin.split("\ndest-auth ", 1)[1].split("\n", 1)[0]).decode()
    user, _, fill_password = dest.partition(":")
    assert user == "sealer-fill" and len(fill_password) >= 43 and fill_password != PASSWORD
    assert "\ndest-ca " in stdin
    assert STORE_PASSWORD not in stdin and STORE_PASSWORD not in fill.inputs["create"]


def test_a_brought_cert_that_does_not_name_127_0_0_1_is_not_verified_through_the_tunnel(program):
    """An adopted cluster keeps sealer's self-signed cert (the domain and IPs as DNS names): the
    fill reaches master0's registry at 127.0.0.1 through SSH, where that cert cannot verify, so
    it gets no dest-ca (TLS unverified inside the tunnel) instead of failing every copy."""
    from lab.sealer_state import sealer_self_signed

    cert, key = sealer_self_signed("sea.hub", ["127.0.0.1", *MASTERS])
    fill = program(registry__tls={"cert": cert, "key": key}).by_name()[f"data-{MASTERS[0]}"]
    assert "\nstore-ca " in fill.inputs["stdin"] and "\ndest-ca " not in fill.inputs["stdin"]


def test_program_without_a_store_fills_nothing_from_one(program):
    """No apps.image_store (an adopted cluster): master0 keeps its own data, nothing is local."""
    mocks = program(apps__image_store=DELETE, apps__cluster_image_id=DELETE)
    assert mocks.by_name()[f"data-{MASTERS[0]}"].typ == "command:remote:Command"
    assert not mocks.of_type("command:local:Command")


def test_config_with_every_endpoint_down_is_invalid():
    """The stack config itself (so `validate` and the preview, offline) refuses endpoints that
    all sit on down hosts, naming the key and the endpoints; one live endpoint is enough."""
    dead = f"https://{MASTERS[0]}:6443"
    with pytest.raises(ConfigError) as info:
        build_config(render(down_hosts=[MASTERS[0]], master0=MASTERS[1], kubernetes__endpoints=[dead]))
    assert info.value.paths() == ["kubernetes.endpoints"]
    assert "no apiserver left" in info.value.problems[0].message
    assert dead in info.value.problems[0].message
    both = [dead, "https://lb.example.com:6443"]
    config = build_config(render(down_hosts=[MASTERS[0]], master0=MASTERS[1], kubernetes__endpoints=both))
    assert kubeapi.choose(config) == "https://lb.example.com:6443"
