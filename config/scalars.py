"""Scalar values of the stack config: what one value may hold, checked whole.

Every pattern is applied with ``re.fullmatch`` and explicit ASCII classes: with ``re.match`` and
``$`` a value with a final newline passes (``$`` matches before it) and ``\\d`` takes any Unicode
digit. Each rule exists because the value later reaches a shell command, ssh, rsync, curl,
htpasswd, DNS or ``/etc/hosts``; the messages say so, so a user knows why a value is refused.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import re
from typing import Annotated, Any

from pydantic import AfterValidator, SecretStr, StrictInt

_SECRETISH = re.compile(r"PRIVATE KEY|^\$2[aby]\$")


def show(value: Any) -> str:
    """Render a bad value for an error message without ever revealing a secret."""
    if isinstance(value, SecretStr):
        return "<secret>"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        if _SECRETISH.search(value):
            return "<secret>"
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:8])
        return f"an object {{{keys}}}" if keys else "an empty object"
    if isinstance(value, (list, tuple)):
        text = "[" + ", ".join(show(v) for v in value) + "]"
        return text if len(text) <= 80 else text[:77] + "...]"
    return f"a {type(value).__name__}"


# C0 controls (newline, tab, ESC, NUL, ...), DEL and C1 controls: they end a line of a file,
# a word of a command, or are invisible in a terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(value: str) -> bool:
    return _CONTROL.search(value) is not None


def control_problem(value: str) -> str | None:
    """Where ``value`` holds its first control character, for a message; None when it holds none."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"{show(value)} holds a line break or control character ({found.group()!r} at character {found.start() + 1})"


def _no_control(value: str) -> str:
    problem = control_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError(f"{value!r} must not be empty")
    return value


# ---------------------------------------------------------------------------------------------
# Host addresses


_NOT_HOSTS = (
    (ipaddress.ip_network("127.0.0.0/8"), "a loopback address (127.0.0.0/8, where every machine reaches itself)"),
    (ipaddress.ip_network("0.0.0.0/8"), "an unspecified address (0.0.0.0/8)"),
    (ipaddress.ip_network("255.255.255.255/32"), "the broadcast address"),
    (ipaddress.ip_network("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"),
    (ipaddress.ip_network("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"),
    # A host gets one only when nothing configured its address; 169.254.169.254 is a cloud's
    # metadata service.
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address (169.254.0.0/16)"),
)

IPV6_UNSUPPORTED = "IPv6 hosts are not supported yet: rsync/ssh/curl targets are built for IPv4"


def _host_ip(value: str) -> str:
    """An IPv4 address a cluster host can have, in canonical form."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IP address") from None
    if ip.version == 6:
        raise ValueError(f"{value!r}: {IPV6_UNSUPPORTED}; give the host's IPv4 address")
    for network, what in _NOT_HOSTS:
        if ip in network:
            raise ValueError(f"{value!r} is {what}, not a cluster host's address")
    return str(ip)


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a valid port (1-65535)")
    return value


def _check_interval(value: int) -> int:
    if not 1 <= value <= 60:
        raise ValueError(f"{value} is not a health-check interval in whole seconds (1-60)")
    return value


# ---------------------------------------------------------------------------------------------
# DNS names


_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# curl (WHATWG URL host parsing) and inet_aton (the C resolver) read a name whose last label is a
# number (decimal, octal or 0x-hex) as an IPv4 address: `1234`, `127.1`, `0x7f.1`.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
# Names every host already resolves (RFC 6761 and the usual /etc/hosts lines).
_LOCAL_NAMES = frozenset({
    "localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4",
    "localhost6", "localhost6.localdomain6", "ip6-localhost", "ip6-loopback",
})


def _is_dns_name(value: str) -> bool:
    return 0 < len(value) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in value.split("."))


def _name_problem(value: str) -> str | None:
    """Why a syntactically valid DNS name still cannot name a host of its own, or None."""
    name = value.lower()
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        return (f"{value!r} reads as an IP address (its last label is a number; curl and the C "
                "resolver take such a name as an address)")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"{value!r} already names the local machine on every host (RFC 6761, /etc/hosts)"
    return None


def _dns_name(value: str) -> str:
    if not _is_dns_name(value):
        raise ValueError(
            f"{value!r} is not a valid DNS name (RFC 1123: dot-separated labels of letters, "
            "digits and '-', 1-63 characters, not starting or ending with '-')"
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        raise ValueError(f"{value!r} is an IP address; a DNS name is required")
    problem = _name_problem(value)
    if problem:
        raise ValueError(f"{problem}: choose a DNS name of the registry's own, e.g. sea.hub")
    return value.lower()


def _host(value: str) -> str:
    """An IPv4 host address or a DNS name (the jump host)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return _host_ip(value)
    if not _is_dns_name(value):
        raise ValueError(f"{value!r} is neither an IP address nor a valid DNS name")
    problem = _name_problem(value)
    if problem:
        raise ValueError(f"{problem}: give the jump host's own name or IPv4 address")
    return value.lower()


# ---------------------------------------------------------------------------------------------
# Names and identifiers


_CLUSTER_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def _cluster_name(value: str) -> str:
    if not _CLUSTER_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid cluster name (lowercase letters, digits and '-', "
            "1-63 characters, starting and ending with a letter or digit)"
        )
    return value


_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


def _image_id(value: str) -> str:
    if not _IMAGE_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not an image id ('sha256:' followed by 64 lowercase hex digits)")
    return value


# POSIX portable user names: the portable filename characters, no leading '-'. Nothing a shell,
# ssh (`USER@HOST`, a leading '-' is an option), htpasswd (`USER:HASH`) or a curl config line
# (`user = "USER:PASS"`) would read differently.
_USER_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")


def _user_rule(max_len: int, reason: str):
    def check(value: str) -> str:
        if len(value) > max_len or not _USER_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid user name (letters, digits, '.', '_' and '-', "
                f"1-{max_len} characters, not starting with '-': {reason})"
            )
        return value

    return check


_ssh_user = _user_rule(32, "ssh and rsync take it as USER@HOST")
_registry_user = _user_rule(64, "it becomes the USER of htpasswd's USER:HASH and of curl's user = \"USER:PASS\"")

_APP_NAME_BAD = re.compile(r"[\s/\x00-\x1f\x7f-\x9f]")


def _app_name(value: str) -> str:
    if value in (".", "..") or _APP_NAME_BAD.search(value):
        raise ValueError(
            f"{value!r} is not a valid application name (one word: no whitespace, control "
            "character or '/'; sealer looks applications up by name)"
        )
    return value


# ---------------------------------------------------------------------------------------------
# Paths


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    if ".." in value.split("/"):
        raise ValueError(f"{value!r} must not contain '..'")
    return posixpath.normpath(value)


_SAFE_PATH = re.compile(r"[A-Za-z0-9._/-]+")


def _data_root(value: str) -> str:
    path = _absolute_path(value)
    if not _SAFE_PATH.fullmatch(value):
        raise ValueError(
            f"{value!r} holds a character other than letters, digits, '.', '_', '-' and '/': "
            "sealer's init-registry.sh splits the registry path on whitespace, rsync reads ':' "
            "as a host separator, and the path is part of remote commands"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Pinned SSH host keys: one known_hosts line each


_HOST_KEY = re.compile(
    r"(?P<type>(?:ssh-|ecdsa-sha2-|sk-)[A-Za-z0-9@._-]+) +(?P<blob>[A-Za-z0-9+/]+={0,2})(?: +(?P<comment>.*))?"
)
_HOST_KEY_FORM = "'<type> <base64>[ comment]'"


def _host_key(value: str) -> str:
    shown = show(value)
    problem = control_problem(value)
    if problem:
        raise ValueError(f"{problem}: a pinned host key is one known_hosts line, {_HOST_KEY_FORM}")
    key = value.strip(" ")
    match = _HOST_KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"{shown} is not a public host key ({_HOST_KEY_FORM} on one line)")
    try:
        blob = base64.b64decode(match["blob"], validate=True)
    except binascii.Error:
        raise ValueError(f"{shown} is not a public host key ({_HOST_KEY_FORM}): its key is not valid base64") from None
    # The blob starts with its own type as an SSH string (uint32 length, name).
    size = int.from_bytes(blob[:4], "big")
    inner = blob[4:4 + size].decode("ascii", "replace") if len(blob) >= 4 + size else ""
    if inner != match["type"]:
        raise ValueError(f"{shown} is not a public host key ({_HOST_KEY_FORM}): its base64 holds "
                         f"a {inner or 'malformed'} key, not {match['type']}")
    return key


def _apiserver_url(value: str) -> str:
    """A kube-apiserver URL as a kubeconfig's ``server`` holds it: ``https://HOST[:PORT][/PATH]``,
    HOST an IPv4 address or a DNS name. Returned canonical (host lowercased, no final ``/``)."""
    from urllib.parse import urlsplit

    shown = show(value)
    if control_problem(value) or any(c.isspace() for c in value):
        raise ValueError(f"{shown} is not a URL (it holds spaces or control characters)")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as e:
        raise ValueError(f"{shown} is not a URL ({e})") from None
    if url.scheme != "https":
        raise ValueError(f"{shown} is not an https:// URL (a kube-apiserver serves TLS only, and "
                         "the credentials must not travel in clear)")
    if url.username is not None or url.query or url.fragment:
        raise ValueError(f"{shown}: give https://HOST[:PORT][/PATH] only (no user, query or fragment)")
    host = url.hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _is_dns_name(host):
            raise ValueError(f"{shown}: {host!r} is neither an IP address nor a valid DNS name") from None
    else:
        # Loopback is allowed: an SSH tunnel to an apiserver (`ssh -L 6443:<master>:6443`).
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"{shown}: {host} cannot be an apiserver's address")
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    if port is not None:
        _port(port)
    return f"https://{host}{'' if port is None else f':{port}'}{url.path.rstrip('/')}"


# ---------------------------------------------------------------------------------------------

Port = Annotated[StrictInt, AfterValidator(_port)]
CheckInterval = Annotated[StrictInt, AfterValidator(_check_interval)]
HostIP = Annotated[str, AfterValidator(_host_ip)]
DnsName = Annotated[str, AfterValidator(_dns_name)]
HostName = Annotated[str, AfterValidator(_host)]
ClusterName = Annotated[str, AfterValidator(_cluster_name)]
DataRoot = Annotated[str, AfterValidator(_data_root)]
ImageId = Annotated[str, AfterValidator(_image_id)]
NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]
Text = Annotated[str, AfterValidator(_no_control)]
NonEmptyText = Annotated[str, AfterValidator(_non_empty), AfterValidator(_no_control)]
LocalPath = NonEmptyText  # a path on the machine that runs the program
AppName = Annotated[str, AfterValidator(_non_empty), AfterValidator(_app_name)]
SshUser = Annotated[str, AfterValidator(_ssh_user)]
RegistryUser = Annotated[str, AfterValidator(_registry_user)]
ApiserverURL = Annotated[str, AfterValidator(_apiserver_url)]
