"""In-cluster records: ConfigMap and Secret ``sealer-registry`` and ConfigMap ``sealer-apps``."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

import topology

NAMESPACE = "kube-system"
LABELS = {"app.kubernetes.io/managed-by": "pulumi"}
# An object created by sealer (or by an earlier stack) has other field managers: take its fields
# over instead of failing the apply with a conflict.
ANNOTATIONS = {"pulumi.com/patchForce": "true"}


def metadata(name: str) -> k8s.meta.v1.ObjectMetaArgs:
    return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=NAMESPACE, labels=LABELS,
                                      annotations=ANNOTATIONS)


@dataclass(frozen=True)
class RegistryRecordsArgs:
    kubeconfig: pulumi.Input[str]       # secret Output: kubeconfig content
    context: str | None
    cluster_identifier: str             # stable: the provider must not follow master0's IP
    summary: dict                       # non-secret registry summary (sealer's `registry` key)
    registry_yml: str
    ca_cert: str | None
    cert: str | None
    key: pulumi.Input[str] | None       # secret Output
    htpasswd: pulumi.Input[str] | None  # secret Output
    application_json: str
    # sealer's own keys of the `registry` value (`external`, `local`; see sealer_registry_info),
    # kept in sealer's shape without the password.
    sealer_info: dict | None = None


def sealer_registry_info(*, domain: str, port: int, username: str | None, insecure: bool, ha: bool,
                         deploy_hosts: list[str], master0: str) -> dict:
    """sealer's `registry` value of ConfigMap kube-system/sealer-registry as sealer writes it
    (RegistryInfo marshalled by go-yaml v3, which ignores json tags: lowercase field names,
    pkg/registry/configurator.go@v0.11.0:27-36, pkg/cluster-runtime/installer.go:416-440),
    without the password. deployhosts: every deploy host in HA, master0 only otherwise
    (local.go@v0.11.0:58-66). The HA VIP is sealer's (env IPvsVIPv4) and not known to the
    program: no `vip` key in HA, sealer's empty one otherwise."""
    local: dict = {
        "localregistry": {
            "registryconfig": {"domain": domain, "port": port, "username": username or ""},
            "ha": ha, "insecure": insecure, "cert": {"subjectaltname": None},
        },
        "deployhosts": list(deploy_hosts) if ha else [master0],
    }
    if not ha:
        local["vip"] = ""
    return {"external": None, "local": local}


class RegistryRecords(pulumi.ComponentResource):
    """``records``: the provider ``k8s`` and the three objects in ``kube-system``.

    Data changes are applied in place (``enable_config_map_mutable``/``enable_secret_mutable``):
    with fixed names a replace would delete the object first and leave a window without it.
    Existing objects of the same name (an existing sealer cluster's ``sealer-registry``) are
    adopted (``upsert_existing_objects``); their plaintext ``registry`` key is overwritten with a
    summary without the password, next to sealer's own keys (``external``, ``local``) in sealer's
    shape, so that what reads sealer's record (`adopt`, an operator) still finds the registry mode
    and deploy hosts there.
    """

    def __init__(self, name: str, args: RegistryRecordsArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("sealer:registry:Records", name, None, opts)
        self.provider = k8s.Provider(
            topology.K8S_PROVIDER,
            kubeconfig=args.kubeconfig,
            context=args.context,
            cluster_identifier=args.cluster_identifier,
            enable_config_map_mutable=True,
            enable_secret_mutable=True,
            upsert_existing_objects=True,
            enable_patch_force=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_cluster = pulumi.ResourceOptions(parent=self, provider=self.provider)

        # The distribution config under the name of the rootfs file it is (registry_config.yml)
        # only: a `registry.yml` key would hold it under the name of sealer v0.8's settings file
        # ({ip, domain, port, username, password}, pkg/runtime/registry.go@v0.8.7), and whoever
        # restores rootfs files from this ConfigMap by key would write it over sealer's.
        data = {
            "registry": yaml.safe_dump({**args.summary, **(args.sealer_info or {})}, sort_keys=True),
            "registry_config.yml": args.registry_yml,
        }
        if args.ca_cert is not None:
            data["ca.crt"] = args.ca_cert
        if args.cert is not None:
            data["tls.crt"] = args.cert
        self.registry_config = k8s.core.v1.ConfigMap(
            topology.REGISTRY_CONFIG,
            metadata=metadata("sealer-registry"),
            data=data,
            opts=on_cluster,
        )

        secret_data: dict[str, pulumi.Input[str]] = {}
        if args.key is not None:
            secret_data["tls.key"] = args.key
        if args.htpasswd is not None:
            secret_data["htpasswd"] = args.htpasswd
        self.registry_secret = k8s.core.v1.Secret(
            topology.REGISTRY_SECRET,
            metadata=metadata("sealer-registry"),
            type="Opaque",
            string_data=secret_data,
            opts=on_cluster,
        )

        self.apps = k8s.core.v1.ConfigMap(
            topology.APPS,
            metadata=metadata("sealer-apps"),
            data={"application.json": args.application_json},
            opts=on_cluster,
        )
        self.register_outputs({
            "registry_config": self.registry_config.metadata.name,
            "registry_secret": self.registry_secret.metadata.name,
            "apps": self.apps.metadata.name,
        })
