"""Unit tests for material/: certificates, htpasswd, the registry config, build_material."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import bcrypt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from material import RegistryMaterial, build_material
from material import htpasswd as hp
from material import pki
from material.registry_config import render_registry_yml

IPS = ["198.18.0.11", "198.18.0.12", "fd00:198:18::11"]
KEY_MATERIAL = b"test secret key material"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return pki.generate_ca()


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _key(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ca_with_key(key) -> tuple[str, str]:
    """A minimal CA signed with ``key`` (RSA/Ed25519 CAs that generate_ca does not make)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test-ca-{type(key).__name__}")])
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, algorithm)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def _material(ca: tuple[str, str], **overrides) -> RegistryMaterial:
    args = dict(
        domain="sea.hub", port=5000, deploy_ips=IPS, insecure=False,
        username="admin", password="s3cret", ca_cert=ca[0], ca_key=ca[1],
    )
    args.update(overrides)
    return build_material(**args)


# --------------------------------------------------------------------------- registry config


def test_registry_yml_secure_with_auth_has_container_paths():
    """tls+auth: listener on :port; storage, TLS and htpasswd at the paths sealer's registry
    container mounts them (VOLUME → /var/lib/registry, <rootfs>/certs → /certs, htpasswd →
    /htpasswd), never host paths."""
    cfg = yaml.safe_load(render_registry_yml(domain="sea.hub", port=5000, tls=True, auth=True))
    assert cfg["version"] == "0.1"
    assert cfg["log"]["level"] == "info"
    assert cfg["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"
    assert cfg["storage"]["delete"]["enabled"] is False
    assert cfg["http"]["addr"] == ":5000"
    assert cfg["http"]["tls"] == {"certificate": "/certs/sea.hub.crt", "key": "/certs/sea.hub.key"}
    assert cfg["http"]["debug"]["addr"] == "127.0.0.1:5002"
    assert cfg["http"]["debug"]["prometheus"]["enabled"] is True
    assert cfg["http"]["headers"] == {"X-Content-Type-Options": ["nosniff"]}
    assert cfg["auth"]["htpasswd"] == {"realm": "sealer-registry", "path": "/htpasswd"}
    assert cfg["health"]["storagedriver"] == {"enabled": True, "interval": "10s", "threshold": 3}


def test_registry_yml_secure_without_auth_has_no_auth_section():
    """tls, no auth: TLS present, no `auth` key at all (the registry would otherwise demand it)."""
    cfg = yaml.safe_load(render_registry_yml(domain="sea.hub", port=5000, tls=True, auth=False))
    assert "tls" in cfg["http"]
    assert "auth" not in cfg


def test_registry_yml_insecure_with_auth_has_no_tls():
    """no tls, auth: plain HTTP listener with htpasswd auth."""
    cfg = yaml.safe_load(render_registry_yml(domain="sea.hub", port=5001, tls=False, auth=True))
    assert "tls" not in cfg["http"]
    assert cfg["http"]["addr"] == ":5001"
    assert cfg["auth"]["htpasswd"]["path"] == "/htpasswd"


def test_registry_yml_insecure_without_auth_has_neither():
    """no tls, no auth: neither `http.tls` nor `auth`; storage and health unchanged."""
    cfg = yaml.safe_load(render_registry_yml(domain="sea.hub", port=5000, tls=False, auth=False))
    assert "tls" not in cfg["http"] and "auth" not in cfg
    assert cfg["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"


def test_registry_yml_is_byte_stable():
    """Same arguments → byte-identical text (no diff on a second `pulumi up`)."""
    args = dict(domain="sea.hub", port=5000, tls=True, auth=True)
    assert render_registry_yml(**args) == render_registry_yml(**args)


@pytest.mark.parametrize("port", [5000, 5001, 443, 8443, 65535])
def test_registry_yml_survives_sealers_sed(port):
    """sealer's init-registry.sh runs `sed -i "s/5000/$PORT/g"` on the config: with the port we
    rendered for, the file comes out byte-identical ('5000' appears at most in the listen
    address, and only when the port is 5000)."""
    text = render_registry_yml(domain="sea.hub", port=port, tls=True, auth=True)
    assert text.replace("5000", str(port)) == text
    assert text.count("5000") == (1 if port == 5000 else 0)


@pytest.mark.parametrize("bad, fragment", [
    (dict(port=0), "1..65535"), (dict(port=70000), "1..65535"), (dict(domain="sea hub"), "domain"),
    (dict(port=15000), "':15000' into ':115000'"), (dict(port=50001), "':50001' into ':500011'"),
    (dict(domain="hub5000.local"), "contains '5000'"),
])
def test_registry_yml_rejects_bad_inputs(bad, fragment):
    """Out-of-range port, a domain with spaces, and a port or domain that sealer's sed would
    rewrite raise ValueError saying why."""
    args = dict(domain="sea.hub", port=5000, tls=True, auth=True) | bad
    with pytest.raises(ValueError, match=re.escape(fragment)):
        render_registry_yml(**args)


# --------------------------------------------------------------------------- htpasswd


def test_htpasswd_line_verifies_with_bcrypt():
    """The line is `user:$2b$10$…` and bcrypt.checkpw accepts the password."""
    line = hp.htpasswd_line("admin", "s3cret", KEY_MATERIAL)
    user, hashed = line.split(":", 1)
    assert user == "admin"
    assert hashed.startswith("$2b$10$") and len(hashed) == 60
    assert bcrypt.checkpw(b"s3cret", hashed.encode())
    assert hp.verify(line, "admin", "s3cret")


def test_htpasswd_rejects_wrong_password_and_user():
    """verify() is False for a wrong password or another username."""
    line = hp.htpasswd_line("admin", "s3cret", KEY_MATERIAL)
    assert not hp.verify(line, "admin", "wrong")
    assert not hp.verify(line, "other", "s3cret")
    assert not bcrypt.checkpw(b"wrong", line.split(":", 1)[1].encode())


def test_htpasswd_is_stable_across_calls():
    """Same username, password and key material → identical line."""
    assert hp.htpasswd_line("admin", "s3cret", KEY_MATERIAL) == hp.htpasswd_line("admin", "s3cret", KEY_MATERIAL)


def test_htpasswd_salt_differs_per_username_and_key():
    """The salt depends on the username and on the secret key material."""
    salt = lambda line: line.split(":", 1)[1][:29]  # noqa: E731  $2b$10$ + 22 chars
    a = hp.htpasswd_line("admin", "s3cret", KEY_MATERIAL)
    b = hp.htpasswd_line("admin2", "s3cret", KEY_MATERIAL)
    c = hp.htpasswd_line("admin", "s3cret", b"another key")
    assert len({salt(a), salt(b), salt(c)}) == 3


def test_htpasswd_salt_is_hmac_of_username():
    """Salt = bcrypt-base64(HMAC-SHA256(key, b"htpasswd:"+user)[:16]), 22 chars, round-trips."""
    import hashlib
    import hmac

    salt = hp.bcrypt_salt(KEY_MATERIAL, "admin")
    raw = hmac.new(KEY_MATERIAL, b"htpasswd:admin", hashlib.sha256).digest()[:16]
    body = salt[len(b"$2b$10$"):]
    std = body.translate(bytes.maketrans(hp._BCRYPT_B64, hp._STD_B64)) + b"=="
    assert salt.startswith(b"$2b$10$") and len(body) == 22
    assert base64.b64decode(std) == raw


def test_htpasswd_rejects_colon_username_and_overlong_password():
    """A ':' in the username or a password over 72 bytes raises ValueError (not truncation)."""
    with pytest.raises(ValueError):
        hp.htpasswd_line("ad:min", "pw", KEY_MATERIAL)
    with pytest.raises(ValueError):
        hp.htpasswd_line("admin", "x" * 73, KEY_MATERIAL)


def test_validate_htpasswd_rejects_non_bcrypt():
    """A brought htpasswd with an apr1 (MD5) entry is rejected: the registry only takes bcrypt."""
    with pytest.raises(ValueError, match="bcrypt"):
        hp.validate_htpasswd("admin:$apr1$abcdefgh$0123456789abcdefghijkl\n")


# --------------------------------------------------------------------------- CA and leaf


def test_generate_ca_is_an_ec_p256_ca(ca):
    """generate_ca: self-signed EC P-256, CA:TRUE, keyCertSign+cRLSign, SKI, key matches."""
    cert, key = _cert(ca[0]), _key(ca[1])
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert _spki(cert.public_key()) == _spki(key.public_key())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.verify_directly_issued_by(cert)


def test_leaf_chain_verifies_against_ca(ca):
    """The leaf is directly issued by the CA, CA:FALSE, serverAuth, AKI = CA's SKI."""
    leaf = _cert(pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)[0])
    ca_cert = _cert(ca[0])
    leaf.verify_directly_issued_by(ca_cert)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_leaf_has_ip_sans_as_ip_not_dns(ca):
    """Every deploy IP (v4 and v6), 127.0.0.1 and ::1 are IP SANs; none appear as DNS SANs."""
    leaf = _cert(pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert ips == {ipaddress.ip_address(i) for i in IPS + ["127.0.0.1", "::1"]}
    dns = san.get_values_for_type(x509.DNSName)
    assert not any(_is_ip(name) for name in dns)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def test_leaf_has_domain_and_localhost_dns_sans(ca):
    """DNS SANs are exactly the domain and localhost; leaf_sans reports the same."""
    cert_pem = pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)[0]
    sans = pki.leaf_sans(cert_pem)
    assert set(sans["dns"]) == {"sea.hub", "localhost"}
    assert {"127.0.0.1", "::1", "198.18.0.11", "fd00:198:18::11"} <= set(sans["ip"])


def test_leaf_is_byte_identical_across_calls(ca):
    """Same CA, domain and IPs → byte-identical cert and key PEM."""
    assert pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS) == pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)


def test_leaf_san_order_and_duplicates_are_irrelevant(ca):
    """A permutation of the IPs (with duplicates, non-canonical IPv6 text) gives the same cert."""
    shuffled = ["fd00:198:18:0::11", "198.18.0.12", "198.18.0.11", "198.18.0.12", "127.0.0.1"]
    assert pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS) == pki.issue_leaf(ca[0], ca[1], "sea.hub", shuffled)


def test_leaf_validity_is_the_cas_window(ca):
    """not_before/not_after equal the CA's, so the leaf does not depend on the clock."""
    leaf, ca_cert = _cert(pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)[0]), _cert(ca[0])
    assert leaf.not_valid_before_utc == ca_cert.not_valid_before_utc
    assert leaf.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_leaf_serial_is_positive_and_below_2_159(ca):
    """The serial is derived, positive and < 2^159; different SAN sets give different serials."""
    s1 = _cert(pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)[0]).serial_number
    s2 = _cert(pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS[:1])[0]).serial_number
    assert 0 < s1 < 2**159 and 0 < s2 < 2**159 and s1 != s2


def test_ca_unchanged_and_leaf_changes_when_deploy_hosts_change(ca):
    """Changing deploy hosts changes the leaf cert (same key) but not the CA nodes trust."""
    m1 = _material(ca, deploy_ips=["198.18.0.11"])
    m2 = _material(ca, deploy_ips=["198.18.0.12", "198.18.0.13"])
    assert m1.ca_cert == m2.ca_cert and m1.ca_fingerprint == m2.ca_fingerprint
    assert m1.cert != m2.cert
    assert m1.key == m2.key


def test_derived_leaf_key_is_stable_and_matches_cert(ca):
    """derive_leaf_key is a function of the CA key and is the issued cert's key."""
    k1, k2 = pki.derive_leaf_key(ca[1]), pki.derive_leaf_key(ca[1])
    assert k1 == k2
    key = _key(k1)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    cert_pem, key_pem = pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)
    assert key_pem == k1
    assert _spki(_cert(cert_pem).public_key()) == _spki(key.public_key())


def test_derived_leaf_key_ignores_pem_wrapping_but_not_the_key(ca):
    """Re-encoding the CA key (traditional EC PEM) derives the same leaf key; another CA, not."""
    traditional = _key(ca[1]).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    assert pki.derive_leaf_key(traditional) == pki.derive_leaf_key(ca[1])
    assert pki.derive_leaf_key(pki.generate_ca()[1]) != pki.derive_leaf_key(ca[1])


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="ec-p256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="ec-p384"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
    ],
)
def test_every_ca_key_type_gives_deterministic_verifiable_leaf(make_key):
    """EC, RSA and Ed25519 CAs all issue byte-identical leaves on repeat, and they verify."""
    ca_cert, ca_key = _ca_with_key(make_key())
    first = pki.issue_leaf(ca_cert, ca_key, "sea.hub", IPS)
    assert first == pki.issue_leaf(ca_cert, ca_key, "sea.hub", IPS)
    _cert(first[0]).verify_directly_issued_by(_cert(ca_cert))


def test_issue_leaf_rejects_mismatched_ca_key(ca):
    """A CA key that is not the CA certificate's key is refused."""
    with pytest.raises(ValueError, match="does not match"):
        pki.issue_leaf(ca[0], pki.generate_ca()[1], "sea.hub", IPS)


def test_issue_leaf_rejects_hostname_in_ips(ca):
    """A host name among the IPs raises ValueError instead of becoming a DNS SAN (sealer's bug)."""
    with pytest.raises(ValueError, match="not an IP"):
        pki.issue_leaf(ca[0], ca[1], "sea.hub", ["master0.example"])


def test_issue_leaf_rejects_ip_as_domain(ca):
    """An IP given as the domain raises ValueError rather than becoming a DNS SAN."""
    with pytest.raises(ValueError, match="is an IP"):
        pki.issue_leaf(ca[0], ca[1], "198.18.0.11", IPS)


def test_fingerprint_is_sha256_of_der(ca):
    """fingerprint() = lowercase sha256 hex of the certificate DER."""
    import hashlib

    der = _cert(ca[0]).public_bytes(serialization.Encoding.DER)
    assert pki.fingerprint(ca[0]) == hashlib.sha256(der).hexdigest()


def test_adopt_accepts_matching_pair(ca):
    """adopt() returns a matching cert/key pair unchanged."""
    assert pki.adopt(ca[0], ca[1]) == ca


def test_adopt_rejects_mismatched_key(ca):
    """adopt() raises ValueError with a clear message when the key is not the cert's."""
    with pytest.raises(ValueError, match="does not match"):
        pki.adopt(ca[0], pki.generate_ca()[1])


def test_adopt_rejects_garbage():
    """adopt() raises ValueError (not a crypto-library error) on unparsable input."""
    with pytest.raises(ValueError):
        pki.adopt("not a cert", "not a key")


# --------------------------------------------------------------------------- build_material


def test_build_material_secure_issues_leaf_and_htpasswd(ca):
    """Default path: leaf from the CA for deploy IPs, CA for nodes, derived htpasswd, tls+auth yml."""
    m = _material(ca)
    assert m.ca_cert == ca[0] and m.ca_fingerprint == pki.fingerprint(ca[0])
    assert (m.cert, m.key) == pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)
    assert hp.verify(m.htpasswd, "admin", "s3cret") and m.htpasswd.endswith("\n")
    cfg = yaml.safe_load(m.registry_yml)
    assert "tls" in cfg["http"] and "auth" in cfg


def test_build_material_is_deterministic(ca):
    """Two builds from the same config are equal (no diff on the next `pulumi up`)."""
    assert _material(ca) == _material(ca)


def test_build_material_insecure_has_no_certs(ca):
    """insecure → no cert, key, CA or fingerprint; a registry config without tls."""
    m = _material(ca, insecure=True)
    assert m.cert is m.key is m.ca_cert is m.ca_fingerprint is None
    assert "tls" not in yaml.safe_load(m.registry_yml)["http"]
    assert hp.verify(m.htpasswd, "admin", "s3cret")


def test_build_material_insecure_without_any_key_still_stable():
    """insecure with no CA key: htpasswd still derived deterministically and verifies."""
    args = dict(domain="sea.hub", port=5000, deploy_ips=IPS, insecure=True,
                username="admin", password="s3cret")
    m1, m2 = build_material(**args), build_material(**args)
    assert m1 == m2 and hp.verify(m1.htpasswd, "admin", "s3cret")


def test_build_material_without_username_has_no_auth(ca):
    """No username and no htpasswd → htpasswd None and no `auth` in the registry config."""
    m = _material(ca, username=None, password=None)
    assert m.htpasswd is None and "auth" not in yaml.safe_load(m.registry_yml)


def test_build_material_brought_self_signed_cert_is_its_own_ca():
    """A brought sealer-style cert+key is used as-is and nodes trust the cert itself."""
    cert, key = pki.generate_ca(common_name="sea.hub")
    m = _material((None, None), ca_cert=None, ca_key=None, cert=cert, key=key)
    assert (m.cert, m.key, m.ca_cert) == (cert, key, cert)
    assert hp.verify(m.htpasswd, "admin", "s3cret")


def test_build_material_brought_cert_with_ca_uses_that_ca(ca):
    """A brought leaf plus its CA: nodes trust the CA; a cert from another CA is refused."""
    cert, key = pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)
    m = _material(ca, cert=cert, key=key)
    assert (m.cert, m.key, m.ca_cert) == (cert, key, ca[0])
    with pytest.raises(ValueError, match="not issued by"):
        _material(pki.generate_ca(), cert=cert, key=key)


def test_build_material_brought_mismatched_pair_rejected(ca):
    """A brought cert with somebody else's key is refused."""
    cert, _ = pki.issue_leaf(ca[0], ca[1], "sea.hub", IPS)
    with pytest.raises(ValueError, match="does not match"):
        _material(ca, cert=cert, key=pki.generate_ca()[1])


def test_build_material_brought_htpasswd_used_as_is(ca):
    """A brought bcrypt htpasswd is passed through byte for byte; auth is on."""
    content = "admin:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n"
    m = _material(ca, htpasswd=content)
    assert m.htpasswd == content and "auth" in yaml.safe_load(m.registry_yml)


def test_build_material_brought_htpasswd_must_accept_configured_password(ca):
    """A brought htpasswd that rejects the configured username/password is refused."""
    content = "admin:" + bcrypt.hashpw(b"other", bcrypt.gensalt(4)).decode() + "\n"
    with pytest.raises(ValueError, match="does not accept"):
        _material(ca, htpasswd=content)


def test_build_material_requires_ca_unless_insecure_or_brought():
    """Secure mode with neither CA nor brought cert raises ValueError naming init-pki."""
    with pytest.raises(ValueError, match="init-pki"):
        _material((None, None))


def test_build_material_username_without_password_rejected(ca):
    """username and password must be given together."""
    with pytest.raises(ValueError, match="together"):
        _material(ca, password=None)


# --------------------------------------------------------------------------- real binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 while sending SNI / checking the cert for another host name."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _get(conn_host: str, port: int, ctx: ssl.SSLContext, auth: str | None) -> http.client.HTTPResponse:
    conn = _PinnedHTTPSConnection(conn_host, port, context=ctx, timeout=5)
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    conn.request("GET", "/v2/", headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


@pytest.mark.skipif(
    shutil.which("docker-registry") is None,
    reason="real-binary check: the `docker-registry` binary (Debian package) is not installed",
)
def test_real_binary_docker_registry_serves_rendered_config_over_tls_with_auth(tmp_path, ca):
    """Real-binary check: `docker-registry serve` accepts our registry config, cert, key and
    htpasswd; /v2/ is 401 without and 200 with credentials over TLS verified by our CA, for the
    domain (SNI), localhost and the 127.0.0.1 IP SAN. The config's paths are container paths;
    here they are pointed at the temp dir through distribution's REGISTRY_* env mapping (the
    lab tier runs it with sealer's real mounts)."""
    rootfs = tmp_path / "rootfs"
    for sub in ("registry", "certs", "etc"):
        (rootfs / sub).mkdir(parents=True)
    port = _free_port()
    while "5000" in str(port):  # such ports are refused: sealer's sed would rewrite them
        port = _free_port()
    m = build_material(
        domain="sea.hub", port=port, deploy_ips=["127.0.0.1"],
        insecure=False, username="admin", password="s3cret", ca_cert=ca[0], ca_key=ca[1],
    )
    (rootfs / "certs" / "sea.hub.crt").write_text(m.cert)
    (rootfs / "certs" / "sea.hub.key").write_text(m.key)
    (rootfs / "etc" / "registry_htpasswd").write_text(m.htpasswd)
    (rootfs / "etc" / "registry_config.yml").write_text(m.registry_yml)
    (tmp_path / "ca.crt").write_text(m.ca_cert)

    env = dict(os.environ)
    # Bind on 127.0.0.1 only, and keep the debug listener off the shared :5002 (a failed bind
    # there is fatal for the registry): override via distribution's REGISTRY_* env mapping.
    env["REGISTRY_HTTP_ADDR"] = f"127.0.0.1:{port}"
    env["REGISTRY_HTTP_DEBUG_ADDR"] = f"127.0.0.1:{_free_port()}"
    env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"] = str(rootfs / "registry")
    env["REGISTRY_HTTP_TLS_CERTIFICATE"] = str(rootfs / "certs" / "sea.hub.crt")
    env["REGISTRY_HTTP_TLS_KEY"] = str(rootfs / "certs" / "sea.hub.key")
    env["REGISTRY_AUTH_HTPASSWD_PATH"] = str(rootfs / "etc" / "registry_htpasswd")
    log = open(tmp_path / "registry.log", "wb")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(rootfs / "etc" / "registry_config.yml")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("registry did not listen in 15 s:\n" + (tmp_path / "registry.log").read_text())
                time.sleep(0.1)

        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        unauth = _get("sea.hub", port, ctx, None)
        assert unauth.status == 401
        assert 'realm="sealer-registry"' in unauth.getheader("WWW-Authenticate", "")
        authed = _get("sea.hub", port, ctx, "admin:s3cret")
        assert authed.status == 200
        assert authed.getheader("X-Content-Type-Options") == "nosniff"
        assert _get("sea.hub", port, ctx, "admin:wrong").status == 401

        # localhost (DNS SAN) and 127.0.0.1 (IP SAN) through plain urllib with the CA file.
        for host in ("localhost", "127.0.0.1"):
            req = urllib.request.Request(
                f"https://{host}:{port}/v2/",
                headers={"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()},
            )
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                assert resp.status == 200
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"https://{host}:{port}/v2/", context=ctx, timeout=5)
            assert err.value.code == 401

        # A CA that did not issue the leaf must not verify.
        other = tmp_path / "other-ca.crt"
        other.write_text(pki.generate_ca()[0])
        with pytest.raises(ssl.SSLCertVerificationError):
            _get("sea.hub", port, ssl.create_default_context(cafile=str(other)), None)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def test_the_fill_user_is_a_cheap_bcrypt_entry_with_a_long_derived_password(ca):
    """The image-store fill logs in as `sealer-fill`: bcrypt cost 4 (htpasswd auth hashes on every
    request) with a password of 256 bits derived from the secret, stable, changed with the
    operator's password; none with a brought htpasswd or with that very username."""
    m = _material(ca)
    operator, fill = m.htpasswd.splitlines()
    assert operator.startswith("admin:$2b$10$") and fill.startswith("sealer-fill:$2b$04$")
    user, password = m.fill_login.split(":", 1)
    assert user == "sealer-fill" and len(base64.urlsafe_b64decode(password + "=")) == 32
    assert hp.verify(m.htpasswd, "sealer-fill", password)
    assert not hp.verify(m.htpasswd, "sealer-fill", "s3cret")
    assert _material(ca).fill_login == m.fill_login
    assert _material(ca, password="other-s3cret").fill_login != m.fill_login
    assert _material(ca, htpasswd=operator + "\n").fill_login is None
    assert _material(ca, username="sealer-fill").fill_login is None
