"""Local lab: namespaced hosts with real sshd, a sealer-style rootfs and a real registry.

`lab.toolchain` (the Pulumi engine build) is a separate sub-package owned by another part of the repo.
"""
from lab.hosts import (BRIDGE, DEFAULT_CLUSTER, DEFAULT_DATA_ROOT, DEFAULT_STATE, GATEWAY, Host,
                       Lab, LabError, packets_to, plan_hosts, split_hosts)

__all__ = ["BRIDGE", "DEFAULT_CLUSTER", "DEFAULT_DATA_ROOT", "DEFAULT_STATE", "GATEWAY", "Host",
           "Lab", "LabError", "packets_to", "plan_hosts", "split_hosts"]
