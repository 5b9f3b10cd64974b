"""cli/sealer_clusterfile.py: after a recovery sealer's Clusterfile names the new master0 first, and
nothing else in it changes. The expected texts are the inputs with only the expected lines moved
(string surgery on the original, never a re-marshal), so any other changed byte fails."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from cli import sealer_clusterfile
from cli.clusterfile import ClusterfileError, parse_clusterfile
from cli.sealer_clusterfile import master0_first, masters_of
from lab import sealer_files as sf
from lab.sealer_files import Flavour

FIXTURES = Path(__file__).parent / "fixtures" / "sealer"
V011 = (FIXTURES / "v0.11" / "Clusterfile").read_text()
V011_CM = (FIXTURES / "v0.11" / "Clusterfile.configmap").read_text()
V08 = (FIXTURES / "v0.8" / "Clusterfile").read_text()


def swap(text: str, a: str, b: str) -> str:
    """``text`` with the one occurrence of ``a`` and the one of ``b`` (a before b) traded."""
    assert text.count(a) == 1 and text.count(b) == 1, (a, b)
    i, j = text.index(a), text.index(b)
    assert i + len(a) <= j
    return text[:i] + b + text[i + len(a):j] + a + text[j + len(b):]


def lab_text(flavour: Flavour, masters: list[str], host_ssh=None, app: bool = True) -> str:
    cluster = sf.cluster_document(flavour=flavour, name="lab", image="img:1", masters=masters,
                                  nodes=["10.0.0.21", "10.0.0.22"], ssh={"passwd": "pw", "pk": "/k"},
                                  domain="sea.hub", port=5000, host_ssh=host_ssh)
    docs = [cluster, sf.application_document()] if app and flavour.v011 else [cluster]
    return sf.clusterfile_text(docs)


def test_one_entry_of_masters_gets_the_new_master0_ip_first_and_nothing_else_changes():
    """sealer v0.11's shape: the IP moves inside the entry; the Application document, secrets,
    env, key order, quoting all keep their bytes."""
    got = master0_first(V011, "10.0.0.12")
    assert got == swap(V011, "    - 10.0.0.11\n", "    - 10.0.0.12\n")
    assert parse_clusterfile(got).master0 == "10.0.0.12"


def test_the_other_masters_keep_their_order_behind_the_new_master0():
    got = master0_first(V011, "10.0.0.13")
    expected = V011.replace("    - 10.0.0.11\n    - 10.0.0.12\n    - 10.0.0.13\n",
                            "    - 10.0.0.13\n    - 10.0.0.11\n    - 10.0.0.12\n")
    assert got == expected != V011
    assert masters_of(got) == ["10.0.0.13", "10.0.0.11", "10.0.0.12"]


def test_the_configmap_shape_with_its_extra_node_is_edited_the_same_way():
    got = master0_first(V011_CM, "10.0.0.12")
    assert got == swap(V011_CM, "    - 10.0.0.11\n", "    - 10.0.0.12\n")


@pytest.mark.parametrize("text", [V011, V08], ids=["v0.11", "v0.8"])
def test_a_clusterfile_already_naming_master0_first_is_returned_as_it_is(text):
    assert master0_first(text, "10.0.0.11") is text


@pytest.mark.parametrize("text", [V011, V08], ids=["v0.11", "v0.8"])
def test_a_second_run_changes_nothing(text):
    once = master0_first(text, "10.0.0.12")
    assert master0_first(once, "10.0.0.12") is once


def test_v08_entry_per_ip_moves_the_entry_and_the_master0_role_follows_it():
    """v0.8 (apply/run.go@v0.8.7 getHosts): `sealer exec --roles master0` reads the label, so it
    moves to the new master0's entry; GetMaster0IP reads the order."""
    got = master0_first(V08, "10.0.0.12")
    expected = V08.replace(
        "  - ips:\n    - 10.0.0.11\n    roles:\n    - master\n    - master0\n    ssh: {}\n"
        "  - ips:\n    - 10.0.0.12\n    roles:\n    - master\n    ssh: {}\n",
        "  - ips:\n    - 10.0.0.12\n    roles:\n    - master\n    - master0\n    ssh: {}\n"
        "  - ips:\n    - 10.0.0.11\n    roles:\n    - master\n    ssh: {}\n")
    assert got == expected != V08
    assert parse_clusterfile(got).master0 == "10.0.0.12"
    assert "W16N/9GlFNt1RcQHZutBbw==" in got  # the encrypted passwd untouched


def test_v08_three_masters_the_entries_between_keep_their_order():
    text = lab_text(Flavour.V08, ["10.0.0.11", "10.0.0.12", "10.0.0.13"])
    got = master0_first(text, "10.0.0.13")
    assert masters_of(got) == ["10.0.0.13", "10.0.0.11", "10.0.0.12"]
    doc = parse_clusterfile(got)
    assert doc.nodes == ["10.0.0.21", "10.0.0.22"]
    assert sorted(got.splitlines()) == sorted(text.splitlines())  # lines moved, none changed
    assert got.count("- master0") == 1
    assert got.index("- master0") < got.index("10.0.0.11")


def test_a_master_with_its_own_entry_moves_before_the_shared_entry_with_its_ssh():
    """v0.11 with a per-host ssh (lab/sealer_files.py: the host gets its own entry after the
    shared one): the new master0's whole entry moves, its ssh override with it."""
    text = lab_text(Flavour.V011, ["10.0.0.11", "10.0.0.12", "10.0.0.13"],
                    host_ssh={"10.0.0.13": {"port": "2222", "user": "ops"}})
    shared = "  - ips:\n    - 10.0.0.11\n    - 10.0.0.12\n    roles:\n    - master\n    ssh: {}\n"
    own = ("  - ips:\n    - 10.0.0.13\n    roles:\n    - master\n    ssh:\n"
           "      port: \"2222\"\n      user: ops\n")
    got = master0_first(text, "10.0.0.13")
    assert got == text.replace(shared + own, own + shared) != text
    cf = parse_clusterfile(got)
    assert cf.masters == ["10.0.0.13", "10.0.0.11", "10.0.0.12"]
    assert (cf.hosts_ssh["10.0.0.13"].port, cf.hosts_ssh["10.0.0.13"].user) == (2222, "ops")


def test_flow_style_hosts_are_edited_in_place():
    text = ("kind: Cluster\nmetadata: {name: x}\nspec:\n  hosts: [{ips: [10.0.0.11, 10.0.0.12], "
            "roles: [master]}, {ips: [10.0.0.21], roles: [node]}]  # sealer's hosts\n")
    got = master0_first(text, "10.0.0.12")
    assert got == text.replace("[10.0.0.11, 10.0.0.12]", "[10.0.0.12, 10.0.0.11]")


def test_crlf_line_ends_and_comments_are_kept():
    text = V011.replace("\n", "\r\n").replace("  hosts:", "  # edited by hand\r\n  hosts:")
    got = master0_first(text, "10.0.0.12")
    assert got == swap(text, "    - 10.0.0.11\r\n", "    - 10.0.0.12\r\n")


@pytest.mark.parametrize("ip", ["10.0.0.21", "10.0.0.99"])
def test_a_new_master0_that_is_not_a_master_of_the_file_is_refused_naming_it(ip):
    with pytest.raises(ClusterfileError, match=rf"\(10.0.0.11, 10.0.0.12, 10.0.0.13\) do not "
                                               rf"include the new master0 {ip}"):
        master0_first(V011, ip)


@pytest.mark.parametrize("text,message", [
    ("a: [", "is not valid YAML"),
    ("kind: Cluster\nspec: {}\n", "spec.hosts lists no hosts"),
    ("kind: Pod\n", "has 0 `kind: Cluster` documents"),
    ("kind: Cluster\nspec:\n  hosts:\n  - ips: [10.0.0.21]\n    roles: [node]\n",
     "no host with role master"),
    ("kind: Cluster\nspec:\n  hosts:\n  - ips: {a: 1}\n    roles: [master]\n",
     r"spec.hosts\[0\].ips is not a list of strings"),
])
def test_malformed_clusterfiles_are_refused_with_a_clear_line(text, message):
    with pytest.raises(ClusterfileError, match=message):
        master0_first(text, "10.0.0.12")


def test_a_master0_role_that_cannot_follow_without_moving_other_roles_is_refused():
    text = V08.replace("    - master\n    - master0\n", "    - master\n    - master0\n    - etcd\n")
    with pytest.raises(ClusterfileError, match=r"spec.hosts\[0\] .*`master0` role.*nothing was changed"):
        master0_first(text, "10.0.0.12")


# -- the ConfigMap and the host files (the I/O mocked) -------------------------------------------

class FakeApi:
    """The apiserver's answers to GET and PUT of the ConfigMap, in order."""

    def __init__(self, text: str | None, conflicts: int = 0):
        self.obj = None if text is None else {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "sealer-clusterfile", "namespace": "kube-system",
                         "resourceVersion": "7"}, "data": {"Clusterfile": text}}
        self.conflicts = conflicts
        self.puts: list[dict] = []

    def __call__(self, endpoint, creds, method, body=None):
        if self.obj is None:
            return 404, b"{}"
        if method == "GET":
            return 200, json.dumps(self.obj).encode()
        sent = json.loads(body)
        self.puts.append(sent)
        if self.conflicts:  # someone edited it meanwhile
            self.conflicts -= 1
            self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
            return 409, b"{}"
        assert sent["metadata"]["resourceVersion"] == self.obj["metadata"]["resourceVersion"]
        self.obj = sent
        return 200, body


def test_the_configmap_is_put_back_with_its_resource_version_and_only_the_key_changed(monkeypatch):
    api = FakeApi(V011_CM)
    monkeypatch.setattr(sealer_clusterfile, "_request", api)
    got = sealer_clusterfile.update_configmap("https://10.0.0.12:6443", None, "10.0.0.12")
    assert got.state == "updated"
    assert api.puts[0]["metadata"]["resourceVersion"] == "7"
    assert api.obj["data"]["Clusterfile"] == swap(V011_CM, "    - 10.0.0.11\n", "    - 10.0.0.12\n")
    again = sealer_clusterfile.update_configmap("https://10.0.0.12:6443", None, "10.0.0.12")
    assert again.state == "unchanged" and len(api.puts) == 1


def test_a_conflicting_edit_is_reread_not_overwritten(monkeypatch):
    api = FakeApi(V011_CM, conflicts=1)
    monkeypatch.setattr(sealer_clusterfile, "_request", api)
    got = sealer_clusterfile.update_configmap("https://10.0.0.12:6443", None, "10.0.0.12")
    assert got.state == "updated" and len(api.puts) == 2
    assert api.puts[1]["metadata"]["resourceVersion"] == "8"


def test_endless_conflicts_fail_after_a_bounded_number_of_tries(monkeypatch):
    api = FakeApi(V011_CM, conflicts=99)
    monkeypatch.setattr(sealer_clusterfile, "_request", api)
    got = sealer_clusterfile.update_configmap("https://x:6443", None, "10.0.0.12")
    assert got.state == "failed" and len(api.puts) == sealer_clusterfile.PUT_ATTEMPTS


def test_no_configmap_is_absent_not_a_failure(monkeypatch):
    monkeypatch.setattr(sealer_clusterfile, "_request", FakeApi(None))
    assert sealer_clusterfile.update_configmap("https://x:6443", None, "10.0.0.12").state == "absent"


def test_a_configmap_not_listing_the_new_master0_fails_naming_it(monkeypatch):
    api = FakeApi(V011_CM)
    monkeypatch.setattr(sealer_clusterfile, "_request", api)
    got = sealer_clusterfile.update_configmap("https://x:6443", None, "10.0.0.77")
    assert got.state == "failed" and "10.0.0.77" in got.detail and not api.puts


class FakeHost:
    """scripts/sealer-clusterfile.sh as seen through ``run``: files by path."""

    def __init__(self, files: dict[str, str]):
        self.files = dict(files)
        self.calls: list[tuple] = []

    def __call__(self, ip, *args, data=None):
        self.calls.append(args)
        if args[0] == "read":
            import base64
            out = "".join(f"{p}\t{base64.b64encode(t.encode()).decode()}\n" for p, t in self.files.items())
            return subprocess.CompletedProcess([], 0, out, "")
        _, _name, path, sha = args
        assert hashlib.sha256(self.files[path].encode()).hexdigest() == sha
        self.files[path] = data
        return subprocess.CompletedProcess([], 0, "", "")


def test_host_files_are_rewritten_once_and_left_alone_after():
    host = FakeHost({"/root/.sealer/Clusterfile": V011, "/root/.sealer/lab/Clusterfile": V08})
    got = sealer_clusterfile.update_host_files(host, "10.0.0.12", "lab", "10.0.0.12")
    assert [o.state for o in got] == ["updated", "updated"]
    assert host.files["/root/.sealer/Clusterfile"] == master0_first(V011, "10.0.0.12")
    writes = len(host.calls)
    again = sealer_clusterfile.update_host_files(host, "10.0.0.12", "lab", "10.0.0.12")
    assert [o.state for o in again] == ["unchanged", "unchanged"] and len(host.calls) == writes + 1


def test_a_host_file_that_cannot_be_edited_is_reported_failed_and_not_written():
    host = FakeHost({"/root/.sealer/Clusterfile": V011})
    got = sealer_clusterfile.update_host_files(host, "10.0.0.12", "lab", "10.0.0.99")
    assert got[0].state == "failed" and "10.0.0.99" in got[0].detail
    assert [c[0] for c in host.calls] == ["read"]


def test_an_unreachable_host_is_a_failure_with_ssh_s_line():
    def run(ip, *args, data=None):
        return subprocess.CompletedProcess([], 255, "", "ssh: connect to host 10.0.0.13 port 22: "
                                                        "Connection refused\n")
    got = sealer_clusterfile.update_host_files(run, "10.0.0.13", "lab", "10.0.0.12")
    assert got[0].state == "failed" and "Connection refused" in got[0].detail
