"""Loading PEM certificates the operator brings, including sealer's CA with serial number 0.

sealer issues its registry certificate as a self-signed CA used as the server certificate with
**serial 0** (pkg/clustercert/cert/generator.go@v0.11.0:165-183; v0.8.7 too), which RFC 5280
forbids. ``cryptography`` 48, 49 and 50 load it but emit a ``CryptographyDeprecationWarning``
("Loading this certificate will cause an exception in a future release") on the load and again on
each ``serial_number`` read. An adopted cluster's certificate is what every node already trusts,
so it must keep loading:

- the warning is silenced here, for these loads only (it would reach the operator as noise from
  `validate`, `preview` and every `up`, about a file they cannot change without re-trusting every
  node);
- a release that refuses such a certificate (ValueError) gets a fallback: the DER is parsed with
  the serial's content bytes replaced by a positive value of the same length (no length changes
  anywhere else) and loaded again. That object is good for what the program reads from a brought
  certificate (subject, validity, extensions and SANs, public key, equality with the same file
  loaded the same way); its signature no longer verifies and its ``public_bytes`` differ from
  the file. So digests and anything derived from the certificate's bytes use ``der_of`` (the
  file's own DER), never ``public_bytes``; and a brought certificate is written to hosts as
  the operator's PEM text, never re-encoded.
"""

from __future__ import annotations

import base64
import re
import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

__all__ = ["der_of", "load_pem_certificate", "load_pem_certificates", "nonpositive_serial"]

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.S)


def _blocks(data: bytes | str) -> list[bytes]:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return [base64.b64decode(b"".join(m.group(1).split()), validate=True)
                for m in _PEM.finditer(raw)]
    except ValueError:
        raise ValueError("a CERTIFICATE block is not valid base64") from None


def der_of(data: bytes | str) -> bytes:
    """The DER bytes of the first certificate of a PEM text, as the file holds them."""
    blocks = _blocks(data)
    if not blocks:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return blocks[0]


def _read_tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``at``."""
    if at + 2 > len(der):
        raise ValueError("truncated DER")
    tag, first = der[at], der[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[at:at + count], "big")
        at += count
    if at + length > len(der):
        raise ValueError("truncated DER")
    return tag, at, at + length


def _serial_span(der: bytes) -> tuple[int, int]:
    """Where the content of tbsCertificate.serialNumber sits in a certificate's DER."""
    tag, content, _ = _read_tlv(der, 0)              # Certificate ::= SEQUENCE
    if tag != 0x30:
        raise ValueError("not a DER SEQUENCE")
    tag, at, _ = _read_tlv(der, content)             # tbsCertificate ::= SEQUENCE
    if tag != 0x30:
        raise ValueError("no tbsCertificate")
    tag, start, end = _read_tlv(der, at)
    if tag == 0xA0:                                  # [0] EXPLICIT version
        tag, start, end = _read_tlv(der, end)
    if tag != 0x02 or end == start:
        raise ValueError("no serialNumber INTEGER")
    return start, end


def nonpositive_serial(der: bytes) -> bool:
    """Whether the certificate's serial number is 0 or negative (sealer's is 0)."""
    start, end = _serial_span(der)
    return der[start] & 0x80 != 0 or not any(der[start:end])


def _with_positive_serial(der: bytes) -> bytes:
    start, end = _serial_span(der)
    # 0x01 then zeros: a minimal DER INTEGER of the same length, so no length above changes.
    return der[:start] + b"\x01" + b"\x00" * (end - start - 1) + der[end:]


def _load_der(der: bytes, loader=None) -> x509.Certificate:
    load = loader or x509.load_der_x509_certificate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        try:
            cert = load(der)
        except ValueError:
            try:
                patched = nonpositive_serial(der)
            except ValueError:
                patched = False
            if not patched:
                raise
            cert = load(_with_positive_serial(der))
        return cert


def load_pem_certificates(data: bytes | str, *, loader=None) -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order (ValueError when there is none or one does not
    parse). Serial 0 loads quietly with the pinned ``cryptography`` and with a release that
    refuses it (see the module's docstring); ``loader`` replaces ``load_der_x509_certificate``
    (tests)."""
    blocks = _blocks(data)
    if not blocks:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return [_load_der(der, loader) for der in blocks]


def load_pem_certificate(data: bytes | str, *, loader=None) -> x509.Certificate:
    """The first certificate of a PEM text (see ``load_pem_certificates``)."""
    return load_pem_certificates(data, loader=loader)[0]
