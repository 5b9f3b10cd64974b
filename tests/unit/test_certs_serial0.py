"""sealer's registry certificate (a self-signed CA used as the server cert, serial 0, CN
registry-ca, SAN DNS:<domain> only, PKCS#1 key: pkg/clustercert/cert/generator.go@v0.11.0:165-183)
is accepted everywhere a brought certificate is read, with no warning reaching the operator, by
the pinned cryptography and by a release that refuses serial 0 (simulated by a strict loader:
48, 49 and 50 all still load it; see material/certs.py)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import warnings

import pytest
from cryptography import x509

from config.registry import TlsConfig
from material import build_material, pki
from material.certs import der_of, load_pem_certificate, load_pem_certificates, nonpositive_serial

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def sealer_cert(tmp_path, serial: str = "0") -> tuple[str, str]:
    """A certificate as sealer makes it, built by openssl (cryptography's builder refuses
    serial 0)."""
    key, crt = tmp_path / f"sea.hub-{serial}.key", tmp_path / f"sea.hub-{serial}.crt"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-key", str(key), "-out", str(crt), "-days", "36500",
                    "-subj", "/CN=registry-ca", "-set_serial", serial,
                    "-addext", "subjectAltName=DNS:sea.hub",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign"],
                   check=True, capture_output=True)
    return crt.read_text(), key.read_text()


@pytest.fixture(scope="module")
def sealer_pair(tmp_path_factory):
    return sealer_cert(tmp_path_factory.mktemp("serial0"))


def strict_loader(der: bytes) -> x509.Certificate:
    """A cryptography release that refuses non-positive serials, as 48 announces."""
    if nonpositive_serial(der):
        raise ValueError("error parsing asn1 value: serial number must be positive")
    return x509.load_der_x509_certificate(der)


def test_the_test_certificate_is_sealers_shape(sealer_pair):
    cert_pem, key_pem = sealer_pair
    assert nonpositive_serial(der_of(cert_pem))
    assert "BEGIN RSA PRIVATE KEY" in key_pem
    assert pki.leaf_sans(cert_pem) == {"dns": ["sea.hub"], "ip": []}


def test_serial_zero_loads_without_a_warning(sealer_pair):
    """The pinned cryptography warns on such a load; none of it reaches the operator."""
    cert_pem, _ = sealer_pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = load_pem_certificate(cert_pem)
    assert cert.subject.rfc4514_string() == "CN=registry-ca"


def test_a_positive_serial_is_not_flagged(tmp_path):
    cert_pem, _ = sealer_cert(tmp_path, serial="4660")
    assert not nonpositive_serial(der_of(cert_pem))
    assert load_pem_certificate(cert_pem).serial_number == 4660


def test_the_stack_config_and_the_material_accept_sealers_cert_quietly(sealer_pair):
    """registry.tls {cert, key} as adopt writes it: validated, and the material is built (the CA
    nodes trust is the cert itself), with warnings turned into errors."""
    cert_pem, key_pem = sealer_pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TlsConfig(cert=cert_pem, key=key_pem)
        TlsConfig(ca_cert=cert_pem, cert=cert_pem, key=key_pem)
        material = build_material(domain="sea.hub", port=5000, deploy_ips=["198.18.0.11"],
                                  insecure=False, username=None, password=None,
                                  cert=cert_pem, key=key_pem)
    assert material.cert == cert_pem and material.ca_cert == cert_pem
    assert material.ca_fingerprint == hashlib.sha256(der_of(cert_pem)).hexdigest()
    openssl = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                             input=cert_pem, capture_output=True, text=True, check=True).stdout
    assert material.ca_fingerprint == openssl.split("=", 1)[1].strip().replace(":", "").lower()


def test_a_release_that_refuses_serial_zero_falls_back(sealer_pair):
    """The fallback reads the same subject, SANs and public key; anything that is not a serial
    problem still fails."""
    cert_pem, _ = sealer_pair
    with pytest.raises(ValueError):
        strict_loader(der_of(cert_pem))
    cert = load_pem_certificate(cert_pem, loader=strict_loader)
    plain = load_pem_certificate(cert_pem)
    assert cert.subject == plain.subject
    assert cert.public_key().public_numbers() == plain.public_key().public_numbers()
    assert (cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            == plain.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    assert cert.not_valid_after_utc == plain.not_valid_after_utc
    truncated = base64.b64encode(der_of(cert_pem)[:300]).decode()
    broken = f"-----BEGIN CERTIFICATE-----\n{truncated}\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValueError):
        load_pem_certificates(broken, loader=strict_loader)


def test_the_program_path_survives_a_release_that_refuses_serial_zero(sealer_pair, monkeypatch):
    """Config validation and material with cryptography's DER loader made strict: same result,
    same fingerprint (digests come from the file's DER, never from a re-encoding)."""
    cert_pem, key_pem = sealer_pair
    monkeypatch.setattr(x509, "load_der_x509_certificate", _strict_real())
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der_of(cert_pem))
    TlsConfig(cert=cert_pem, key=key_pem)
    material = build_material(domain="sea.hub", port=5000, deploy_ips=["198.18.0.11"],
                              insecure=False, username=None, password=None,
                              cert=cert_pem, key=key_pem)
    assert material.ca_fingerprint == hashlib.sha256(der_of(cert_pem)).hexdigest()
    assert pki.leaf_sans(cert_pem) == {"dns": ["sea.hub"], "ip": []}


def _strict_real():
    real = x509.load_der_x509_certificate

    def strict(der: bytes, *args):
        if nonpositive_serial(der):
            raise ValueError("error parsing asn1 value: serial number must be positive")
        return real(der, *args)
    return strict


def test_a_brought_ca_with_serial_zero_issues_a_leaf(tmp_path):
    """registry.tls {ca_cert, ca_key} with sealer's CA: the program's leaf is issued by it."""
    cert_pem, key_pem = sealer_cert(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        material = build_material(domain="sea.hub", port=5000, deploy_ips=["198.18.0.11"],
                                  insecure=False, username=None, password=None,
                                  ca_cert=cert_pem, ca_key=key_pem)
        leaf = load_pem_certificate(material.cert)
        leaf.verify_directly_issued_by(load_pem_certificate(cert_pem))
    assert "198.18.0.11" in pki.leaf_sans(material.cert)["ip"]
