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


class RegistryRecords(pulumi.ComponentResource):
    """``records``: the provider ``k8s`` and the three objects in ``kube-system``.

    Data changes are applied in place (``enable_config_map_mutable``/``enable_secret_mutable``):
    with fixed names a replace would delete the object first and leave a window without it.
    Existing objects of the same name (an existing sealer cluster's ``sealer-registry``) are
    adopted (``upsert_existing_objects``); their plaintext ``registry`` key is overwritten with a
    summary without the password.
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
            "registry": yaml.safe_dump(args.summary, sort_keys=True),
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
