"""Registry PKI: one CA (random, made once) and a leaf derived deterministically from it.

The Pulumi program recomputes this material on every run, and a second ``pulumi up`` with an
unchanged stack config must show no diff. So the only randomness is the CA key, generated once by
``generate_ca()`` (``cli init-pki``) and kept by the operator as a stack-config secret; the leaf
key, serial, validity and signature are all functions of (CA cert, CA key, domain, IPs).

Unlike sealer (which uses one self-signed certificate as the server certificate and writes IPs as
DNS SANs), the leaf carries every registry IP as an *IP* SAN, plus the domain, ``localhost``,
``127.0.0.1`` and ``::1``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from material.certs import der_of, load_pem_certificate

__all__ = [
    "LEAF_KEY_INFO",
    "adopt",
    "derive_leaf_key",
    "fingerprint",
    "generate_ca",
    "issue_leaf",
    "leaf_sans",
]

LEAF_KEY_INFO = b"sealer-registry leaf key v1"

# Order n of the P-256 base point (SEC 2, section 2.4.2).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- loading helpers


def _load_cert(cert_pem: str, what: str = "certificate") -> x509.Certificate:
    """The first certificate of ``cert_pem``; sealer's serial-0 CA loads quietly (material.certs)."""
    try:
        return load_pem_certificate(cert_pem)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{what}: not a PEM X.509 certificate ({exc})") from None


def _load_key(key_pem: str, what: str = "private key"):
    try:
        return serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{what}: not an unencrypted PEM private key ({exc})") from None
    except Exception as exc:  # UnsupportedAlgorithm and friends
        raise ValueError(f"{what}: unsupported private key ({exc})") from None


def _key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _spki_der(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def canonical_key_bytes(key_pem: str) -> bytes:
    """Unencrypted PKCS#8 DER of a PEM private key.

    Used as secret input keying material, so that re-wrapping the same key differently
    (PKCS#1 vs PKCS#8 PEM, other line endings, a trailing newline) derives the same material.
    """
    key = _load_key(key_pem)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sign(builder: x509.CertificateBuilder, key) -> x509.Certificate:
    """Sign deterministically: the same builder and key always give the same DER."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # RFC 6979 nonces: the signature is a function of (key, message).
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    if isinstance(key, rsa.RSAPrivateKey):
        # PKCS#1 v1.5 is deterministic (PSS would add a random salt).
        return builder.sign(key, hashes.SHA256(), rsa_padding=padding.PKCS1v15())
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return builder.sign(key, None)  # EdDSA is deterministic by construction
    raise ValueError(
        f"unsupported CA key type {type(key).__name__}: use EC, RSA, Ed25519 or Ed448"
    )


# --------------------------------------------------------------------------- CA


def generate_ca(common_name: str = "sealer-registry-ca", days: int = 3650) -> tuple[str, str]:
    """Make a new self-signed CA: ``(cert PEM, key PEM)``. Random; run once (``cli init-pki``).

    Key type EC P-256: every client in the path (Go crypto/tls in distribution, containerd,
    docker, kubelet; OpenSSL; Python ssl) supports it, keys and signatures are small and fast,
    it supports deterministic (RFC 6979) signatures, and it matches the leaf key type, which must
    be EC to be derivable from a secret (RSA 3072 would only add size and generation time).
    Validity starts 5 minutes in the past to tolerate clock skew between hosts.
    """
    if days <= 0:
        raise ValueError("days must be positive")
    if not common_name:
        raise ValueError("common_name must not be empty")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0) - _dt.timedelta(
        minutes=5
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = _sign(builder, key)
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)


# --------------------------------------------------------------------------- leaf


def derive_leaf_key(ca_key_pem: str) -> str:
    """Derive the registry's EC P-256 leaf key from the CA key (PKCS#8 PEM).

    Why derived and not generated: the program recomputes the leaf on every run and must produce
    the same bytes each time, without storing anything beyond the stack config. The CA key is
    already there as a secret, so the leaf key is a pure function of it:
    ``d = HKDF-SHA256(ikm=PKCS#8 DER of the CA key, salt=None, info=LEAF_KEY_INFO, 48 bytes)``
    reduced to ``1 + (d mod (n-1))`` (FIPS 186-4 B.4.1: the 128 extra bits make the bias
    negligible and the result is never 0). HKDF is one-way, so the leaf key is exactly as secret
    as the CA key and reveals nothing about it; anyone who holds the CA key could mint any
    certificate anyway. Consequence: the leaf key changes only when the CA key changes (key
    rotation = CA rotation); re-issuing the leaf for other hosts keeps the key.
    """
    ikm = canonical_key_bytes(ca_key_pem)
    okm = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=LEAF_KEY_INFO).derive(ikm)
    scalar = 1 + int.from_bytes(okm, "big") % (_P256_ORDER - 1)
    return _key_pem(ec.derive_private_key(scalar, ec.SECP256R1()))


def _parse_ip(ip: str) -> _IpAddress:
    try:
        return ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip)
    except ValueError:
        raise ValueError(f"not an IP address: {ip!r} (host names go in `domain`)") from None


def _canonical_sans(domain: str, ips: list[str]) -> tuple[list[str], list[_IpAddress]]:
    """Deduplicated, sorted DNS names and IPs (IPv4 before IPv6, numeric order)."""
    if not domain or any(c.isspace() for c in domain) or "/" in domain or ":" in domain:
        raise ValueError(f"invalid registry domain {domain!r}")
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        pass
    else:
        raise ValueError(f"registry domain {domain!r} is an IP; it must be a host name (IPs go in `ips`)")
    if isinstance(ips, str):
        raise ValueError("ips must be a list of IP strings, not a string")
    dns = sorted({domain.lower().rstrip("."), "localhost"})
    addrs = {_parse_ip(ip) for ip in ips}
    addrs |= {ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")}
    return dns, sorted(addrs, key=lambda a: (a.version, int(a)))


def _leaf_serial(ca_der: bytes, dns: list[str], addrs: list[_IpAddress]) -> int:
    canon = "\n".join([f"DNS:{d}" for d in dns] + [f"IP:{a.compressed}" for a in addrs])
    digest = hashlib.sha256(ca_der + b"\0" + canon.encode()).digest()
    # 159 bits: positive and < 2^159, so the DER INTEGER fits RFC 5280's 20 octets.
    serial = int.from_bytes(digest[:20], "big") >> 1
    return serial or 1


def issue_leaf(
    ca_cert_pem: str, ca_key_pem: str, domain: str, ips: list[str]
) -> tuple[str, str]:
    """Issue the registry server certificate: ``(cert PEM, key PEM)``. Deterministic.

    SANs: DNS ``domain``, DNS ``localhost``, an IP SAN for each of ``ips`` (IPv4 or IPv6),
    IP ``127.0.0.1`` and IP ``::1`` — canonically ordered and deduplicated, so the same set in
    another order gives byte-identical output. Key: ``derive_leaf_key(ca_key_pem)``.
    Serial: from sha256(CA cert DER + canonical SANs). Validity: exactly the CA's window, so it
    does not depend on the time of the run (a clock-based window would change the certificate on
    every ``pulumi up``); the leaf lives as long as the CA does, and rotating the CA rotates it.
    Go's TLS clients (docker, containerd) do not apply the browsers' 398-day limit to private CAs.
    Signature: deterministic for EC (RFC 6979), RSA (PKCS#1 v1.5) and EdDSA CA keys.
    """
    ca_cert = _load_cert(ca_cert_pem, "CA certificate")
    ca_key = _load_key(ca_key_pem, "CA key")
    if _spki_der(ca_key.public_key()) != _spki_der(ca_cert.public_key()):
        raise ValueError("CA key does not match the CA certificate's public key")
    try:
        bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ValueError("CA certificate lacks BasicConstraints CA:TRUE; it cannot issue")

    dns, addrs = _canonical_sans(domain, ips)
    leaf_key_pem = derive_leaf_key(ca_key_pem)
    leaf_key = serialization.load_pem_private_key(leaf_key_pem.encode(), password=None)
    leaf_pub = leaf_key.public_key()
    ca_der = der_of(ca_cert_pem)  # the file's bytes (a serial-0 CA may load re-encoded)

    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())

    san = x509.SubjectAlternativeName(
        [x509.DNSName(d) for d in dns] + [x509.IPAddress(a) for a in addrs]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _dns_cn(domain))]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_pub)
        .serial_number(_leaf_serial(ca_der, dns, addrs))
        .not_valid_before(ca_cert.not_valid_before_utc)
        .not_valid_after(ca_cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,  # EC key: ECDHE only, no RSA key transport
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_pub), critical=False)
        .add_extension(aki, critical=False)
        .add_extension(san, critical=False)
    )
    cert = _sign(builder, ca_key)
    return cert.public_bytes(serialization.Encoding.PEM).decode(), leaf_key_pem


def _dns_cn(domain: str) -> str:
    """Subject CN of the leaf: the domain, normalised like its DNS SAN."""
    return domain.lower().rstrip(".")


# --------------------------------------------------------------------------- inspection


def leaf_sans(cert_pem: str) -> dict[str, list[str]]:
    """``{"dns": [...], "ip": [...]}`` of a certificate's SubjectAlternativeName, in cert order."""
    cert = _load_cert(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {"dns": [], "ip": []}
    return {
        "dns": list(san.get_values_for_type(x509.DNSName)),
        "ip": [a.compressed for a in san.get_values_for_type(x509.IPAddress)],
    }


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of the (first) certificate's DER as the PEM holds it, lowercase hex without
    separators (the certificate's own fingerprint; checked to parse first)."""
    _load_cert(cert_pem)
    return hashlib.sha256(der_of(cert_pem)).hexdigest()


def adopt(cert_pem: str, key_pem: str) -> tuple[str, str]:
    """Accept an existing certificate and key (e.g. sealer's own), returned unchanged.

    Raises ``ValueError`` if either does not parse or the key is not the certificate's key —
    a registry started with a mismatched pair fails its TLS handshakes on every node.
    """
    cert = _load_cert(cert_pem, "registry certificate")
    key = _load_key(key_pem, "registry key")
    if _spki_der(key.public_key()) != _spki_der(cert.public_key()):
        raise ValueError(
            "registry key does not match the registry certificate (subject "
            f"{cert.subject.rfc4514_string()!r}, sha256 {fingerprint(cert_pem)}): the key's "
            "public key differs from the certificate's; bring the key that belongs to this cert"
        )
    return cert_pem, key_pem
