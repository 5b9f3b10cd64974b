"""lab/sealer_files.py renders sealer's files as its Go code does: the encoders' quirks (HTML
escaping, go-yaml quoting, swapped Application kind), the serial-0 CA, the flavour vocabulary."""
from __future__ import annotations

import datetime
import json
import subprocess

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding

from lab import sealer_files as sf
from lab.sealer_files import Flavour

# cryptography ≥ 48 warns when it reads serial 0, the serial sealer's CA has.
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")


def load(cert_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_pem.encode())


@pytest.mark.parametrize("value", ["v0.11-ha", "v0.11", "v0.8", Flavour.V08])
def test_flavour_accepts_the_three_names(value):
    assert Flavour.parse(value).value == str(getattr(value, "value", value))


@pytest.mark.parametrize("value", ["v0.9", "V0.11", "ha", ""])
def test_flavour_refuses_other_names_and_says_the_value(value):
    with pytest.raises(ValueError, match=f"flavour: {value!r} is not one of v0.11-ha, v0.11, v0.8"):
        Flavour.parse(value)


def test_the_v011_ca_is_sealers_serial_zero_self_signed_ca():
    cert_pem, key_pem = sf.registry_ca(Flavour.V011, "sea.hub")
    cert = load(cert_pem)
    assert cert.serial_number == 0
    assert cert.subject.rfc4514_string() == "CN=registry-ca" == cert.issuer.rfc4514_string()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in san] == ["sea.hub"] and not san.get_values_for_type(x509.IPAddress)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert [type(e.value).__name__ for e in cert.extensions] == [
        "KeyUsage", "BasicConstraints", "SubjectKeyIdentifier", "SubjectAlternativeName"]
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc) / datetime.timedelta(days=365)
    assert years == 100
    cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                             cert.signature_hash_algorithm)   # re-signed after the serial changed
    assert key_pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n")


def test_openssl_reads_the_serial_zero_ca_as_valid(tmp_path):
    cert_pem, _ = sf.registry_ca(Flavour.V011, "sea.hub")
    (tmp_path / "c.pem").write_text(cert_pem)
    done = subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "c.pem", tmp_path / "c.pem"],
                          capture_output=True, text=True)
    assert done.stdout.strip().endswith(": OK"), done.stderr


def test_the_v011_ca_writes_extra_ips_as_dns_names():
    cert = load(sf.registry_ca(Flavour.V011, "sea.hub", ["10.0.0.1"])[0])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["sea.hub", "10.0.0.1"]
    assert san.get_values_for_type(x509.IPAddress) == []


def test_the_v08_ca_is_named_after_the_domain_and_adds_sea_hub():
    cert = load(sf.registry_ca(Flavour.V08, "reg.example")[0])
    assert cert.serial_number == 0
    assert cert.subject.rfc4514_string() == "CN=reg.example,O=sealer"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["reg.example", "sea.hub"]


def test_htpasswd_newline_only_in_v08():
    line = sf.htpasswd(Flavour.V011, "u", "p")
    assert line.startswith("u:$2a$10$") and "\n" not in line
    assert sf.htpasswd(Flavour.V08, "u", "p").endswith("\n")


def test_the_application_log_is_go_json_appended_without_separator():
    exts = [sf.ImageExtension("kube-installer", [sf.App("calico", "shell", ["calico.sh"])],
                              launch_app_names=["calico"]),
            sf.ImageExtension("app-installer", [sf.App("x", cmds=["a && b <c>"])])]
    text = sf.application_log(exts)
    assert "}{" in text and not text.endswith("\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    objs = sf.split_application_log(text)
    assert [o["type"] for o in objs] == ["kube-installer", "app-installer"]
    assert objs[1]["applications"] == [{"name": "x", "cmds": ["a && b <c>"]}]  # no type: omitempty
    assert "\\u0026\\u0026 b \\u003cc\\u003e" in text
    assert objs[1]["launch"] == {} and list(objs[0]) == [
        "buildClient", "schemaVersion", "type", "applications", "launch"]


def test_split_application_log_refuses_garbage():
    from cli.sealer_log import HistoryError

    with pytest.raises(HistoryError, match="object 2"):
        sf.split_application_log('{"a": 1}x')


def test_the_clusterfile_joins_sorted_documents_and_swaps_the_application_kind():
    cluster = sf.cluster_document(flavour=Flavour.V011, name="c", image="img", masters=["1.1.1.1"],
                                  nodes=["1.1.1.2"], ssh={"user": "root", "passwd": "p", "pk": "/k",
                                                          "port": "22"},
                                  domain="sea.hub", port=5000, username="u", password="5000")
    text = sf.clusterfile_text([cluster, sf.application_document()])
    docs = list(yaml.safe_load_all(text))
    assert text.count("---\n") == 1
    assert (docs[1]["apiVersion"], docs[1]["kind"]) == ("Application", "sealer.io/v2")
    spec = docs[0]["spec"]
    assert spec["ssh"]["port"] == "22" and 'port: "22"' in text   # go-yaml quotes a numeric string
    assert spec["registry"]["localRegistry"]["password"] == "5000"
    assert spec["registry"]["localRegistry"]["ha"] is False
    assert spec["containerRuntime"] == {} and docs[0]["metadata"]["creationTimestamp"] is None
    assert spec["env"][-1] == "RegistryURL=sea.hub:5000"


def test_the_v08_clusterfile_gives_master0_two_roles_one_entry_per_ip():
    doc = sf.cluster_document(flavour=Flavour.V08, name="c", image="img",
                              masters=["1.1.1.1", "1.1.1.2"], nodes=["1.1.1.3"], ssh={},
                              domain="sea.hub", port=5000)
    assert doc["apiVersion"] == "sealer.cloud/v2"
    assert [(h["ips"], h["roles"]) for h in doc["spec"]["hosts"]] == [
        (["1.1.1.1"], ["master", "master0"]), (["1.1.1.2"], ["master"]), (["1.1.1.3"], ["node"])]


def test_registry_info_has_go_yaml_v3_lowercase_keys():
    ha = yaml.safe_load(sf.registry_info(domain="sea.hub", port=5000, username="u", password="p",
                                         ha=True, deploy_hosts=["1.1.1.1", "1.1.1.2"], vip="9.9.9.9"))
    assert ha == {"external": None, "local": {
        "localregistry": {"registryconfig": {"domain": "sea.hub", "port": 5000, "username": "u",
                                             "password": "p"},
                          "ha": True, "insecure": False, "cert": {"subjectaltname": None}},
        "deployhosts": ["1.1.1.1", "1.1.1.2"], "vip": "9.9.9.9"}}
    single = yaml.safe_load(sf.registry_info(domain="sea.hub", port=5000, username="", password="",
                                             ha=False, deploy_hosts=["1.1.1.1", "1.1.1.2"], vip="x"))
    assert single["local"]["deployhosts"] == ["1.1.1.1"] and single["local"]["vip"] == ""


def test_hosts_lines_per_flavour():
    assert sf.hosts_line(Flavour.V011, "1.1.1.1", "sea.hub") == "1.1.1.1 sea.hub #hostalias-set-by-sealer"
    assert sf.hosts_line(Flavour.V08, "1.1.1.1", "sea.hub") == "1.1.1.1 sea.hub"


def test_the_lvscare_manifest_ends_with_echos_extra_newline_and_sorts_real_servers():
    text = sf.lvscare_manifest(vip="9.9.9.9", port=5000, masters=["1.1.1.2", "1.1.1.10"],
                               domain="sea.hub")
    assert text.endswith("status: {}\n\n")
    args = yaml.safe_load(text)["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--rs", "1.1.1.10:5000", "--rs", "1.1.1.2:5000"]   # string order, as Go's


def test_docker_auth_config_is_tab_indented_base64():
    text = sf.docker_auth_config(["sea.hub:5000"], "u", "p")
    assert json.loads(text) == {"auths": {"sea.hub:5000": {"auth": "dTpw"}}}
    assert "\n\t\"auths\"" in text
