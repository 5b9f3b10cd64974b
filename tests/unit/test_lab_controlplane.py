"""lab/controlplane.py without hosts: the certificate the masters' apiservers serve and the
/etc/hosts line each master gets (the lab test tier runs the real thing)."""

from __future__ import annotations

import json

from cryptography import x509

from lab import controlplane
from lab.hosts import GATEWAY

MASTERS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]


def sans(pki):
    cert = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(i) for i in ext.get_values_for_type(x509.IPAddress)}


def test_serving_certificate_names_every_master_the_domain_and_the_bridge(tmp_path):
    """Any master's apiserver is verified by IP or by apiserver.cluster.local, from a master or
    from the root namespace (the bridge's address)."""
    controlplane.ensure_pki(tmp_path, MASTERS)
    names, ips = sans(tmp_path)
    assert "apiserver.cluster.local" in names and "kubernetes.default.svc" in names
    assert set(MASTERS) | {GATEWAY, "127.0.0.1"} <= ips


def test_certificate_is_reissued_for_other_masters_and_kept_otherwise(tmp_path):
    """Same masters: the same certificate (a restart keeps the kubeconfig and the CA); another
    set of masters: a new certificate from the same CA."""
    controlplane.ensure_pki(tmp_path, MASTERS)
    first, ca = (tmp_path / "apiserver.crt").read_bytes(), (tmp_path / "ca.crt").read_bytes()
    controlplane.ensure_pki(tmp_path, MASTERS)
    assert (tmp_path / "apiserver.crt").read_bytes() == first
    controlplane.ensure_pki(tmp_path, MASTERS[:2])
    assert (tmp_path / "apiserver.crt").read_bytes() != first
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert "198.18.0.13" not in sans(tmp_path)[1]


def test_hosts_line_replaces_an_earlier_mapping_in_place(tmp_path):
    """One `<ip> apiserver.cluster.local` line, an earlier one (sealer's, another master's)
    replaced, other lines kept, the file's inode kept (hosts may bind-mount /etc/hosts)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.103.97.2 apiserver.cluster.local\n"
                     "198.18.0.11 sea.hub #hostalias-set-by-sealer\n")
    inode = hosts.stat().st_ino
    controlplane._set_hosts_line(hosts, "198.18.0.12")
    controlplane._set_hosts_line(hosts, "198.18.0.12")
    assert hosts.read_text().splitlines() == [
        "127.0.0.1 localhost", "198.18.0.11 sea.hub #hostalias-set-by-sealer",
        f"198.18.0.12 apiserver.cluster.local {controlplane.HOSTS_MARK}"]
    assert hosts.stat().st_ino == inode


def test_kubeconfig_names_the_server_with_admin_credentials(tmp_path):
    controlplane.ensure_pki(tmp_path, MASTERS)
    doc = json.loads(controlplane.kubeconfig_text(tmp_path, controlplane.server_of(MASTERS[0])))
    assert doc["clusters"][0]["cluster"]["server"] == "https://198.18.0.11:6443"
    assert set(doc["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}
