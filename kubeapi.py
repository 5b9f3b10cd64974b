"""Which kube-apiserver the in-cluster records are written through, and the provider's kubeconfig.

In a sealer cluster every master runs a kube-apiserver and an etcd member (kubeadm's stacked
control plane), and the operator's kubeconfig usually names master0: its IP, or
``apiserver.cluster.local`` mapped to it. When master0 is dead that server is dead too, and the
records step of a recovery would fail. So the program does not take the kubeconfig's server as it
is: it uses the first of the candidate endpoints whose host is not in ``down_hosts``:

- ``kubernetes.endpoints`` when set (in its order: a load balancer, a VIP, some masters);
- otherwise ``https://<master>:6443`` of the registry's master0 first, then of the other masters
  in ``cluster.masters`` order. master0 is the host the operator just checked (`recover` moved
  the registry there), and it stays the endpoint when the old master0 rejoins: the endpoint moves
  only with master0, not with a revived host that is still catching up.

The choice is deterministic and made offline: no probe at preview or up (`validate` and a preview
stay offline, and the plan does not depend on which apiserver answered first). `recover` checks,
before it changes anything, that the endpoint it will use answers (cli/apiserver.py).

The provider gets the operator's kubeconfig with one change: the server of the cluster of the
selected context (``kubernetes.context``, else ``current-context``) becomes the endpoint. The
credentials, the CA and any ``tls-server-name`` stay, so TLS is still verified, against the
endpoint's host: the apiserver certificate must name it. kubeadm issues each master's certificate
for that master's advertise IP, and sealer's kubeadm config adds ``apiserver.cluster.local``, its
VIP and the masters' IPs to ``certSANs``. The provider's ``cluster_identifier`` is fixed, so a
changed endpoint updates the provider in place and replaces nothing it manages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable
from urllib.parse import urlsplit

import yaml

from config.errors import ConfigError

if TYPE_CHECKING:
    from config import StackConfig

DEFAULT_PORT = 6443  # kubeadm's and sealer's apiserver port


def endpoint_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def candidates(masters: Iterable[str], down_hosts: Iterable[str],
               endpoints: Iterable[str] | None = None, master0: str | None = None) -> list[str]:
    """The apiserver URLs worth trying, in order: ``endpoints`` (or ``https://<ip>:6443`` of
    master0, then of the other masters) without those whose host is in ``down_hosts``."""
    down = set(down_hosts)
    if endpoints is not None:
        urls = list(endpoints)
    else:
        masters = list(masters)
        ordered = ([master0] if master0 in masters else []) + [ip for ip in masters if ip != master0]
        urls = [f"https://{ip}:{DEFAULT_PORT}" for ip in ordered]
    return [url for url in urls if endpoint_host(url) not in down]


def config_candidates(config: StackConfig, down_hosts: Iterable[str] | None = None,
                      master0: str | None = None) -> list[str]:
    """``candidates`` of a stack config; ``down_hosts`` and ``master0`` override the config's
    (the values a change is about to set)."""
    return candidates(config.cluster.masters,
                      config.down_hosts if down_hosts is None else down_hosts,
                      config.kubernetes.endpoints, master0 or config.master0)


def choose(config: StackConfig, down_hosts: Iterable[str] | None = None,
           master0: str | None = None) -> str:
    """The endpoint the program writes the records through; ConfigError when every candidate
    is down."""
    urls = config_candidates(config, down_hosts, master0)
    if not urls:
        field = "kubernetes.endpoints" if config.kubernetes.endpoints is not None else "cluster.masters"
        raise ConfigError([(field, "no apiserver left: the host of every endpoint is in down_hosts "
                                   "(list a live apiserver in kubernetes.endpoints)")])
    return urls[0]


def _cluster_entry(doc: dict, context: str | None) -> dict:
    """The ``cluster`` mapping of the context the provider will use."""
    name = context or doc.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or []
                if isinstance(c, dict)}
    if name not in contexts:
        known = ", ".join(str(c) for c in contexts) or "none"
        raise ValueError(f"context {name!r} is not in the kubeconfig (contexts: {known})")
    cluster_name = contexts[name].get("cluster")
    for item in doc.get("clusters") or []:
        if isinstance(item, dict) and item.get("name") == cluster_name:
            if not isinstance(item.get("cluster"), dict):
                break
            return item["cluster"]
    raise ValueError(f"cluster {cluster_name!r} of context {name!r} is not in the kubeconfig")


def _parse(text: str) -> dict:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
        raise ValueError("<secret> is not a kubeconfig (a YAML document with 'clusters')")
    return doc


def current_server(kubeconfig: str, context: str | None) -> str:
    """The server the kubeconfig names for the context (for messages)."""
    return str(_cluster_entry(_parse(kubeconfig), context).get("server", ""))


def provider_kubeconfig(kubeconfig: str, context: str | None, server: str) -> str:
    """The kubeconfig with the context's cluster server set to ``server``; the rest unchanged.
    ValueError (the message never quotes the content) when the kubeconfig or context is not
    usable."""
    doc = _parse(kubeconfig)
    _cluster_entry(doc, context)["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)
