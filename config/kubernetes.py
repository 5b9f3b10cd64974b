"""The `kubernetes` section: how the program reaches the cluster's API server.

Owns the rule that the kubeconfig comes from exactly one of `kubeconfig` (a secret) or
`kubeconfig_path`, and the content check of an inline kubeconfig (skipped while encrypted).
Its `cluster_identifier` defaults to the cluster's name (set by config/stack.py); `endpoints` lists
the apiservers to write through (kubeapi.py picks the first live one).
"""

from __future__ import annotations

from typing import Optional

import yaml
from pydantic import SecretStr, model_validator

from config.base import ConfigModel, duplicates, is_encrypted, raise_problems
from config.scalars import ApiserverURL, ClusterName, LocalPath, Text


class KubernetesConfig(ConfigModel):
    kubeconfig: Optional[SecretStr] = None
    kubeconfig_path: Optional[LocalPath] = None
    context: Text = ""
    cluster_identifier: Optional[ClusterName] = None
    # The apiservers the records are written through, in order; the first whose host is not in
    # down_hosts is used (kubeapi.py). Unset: https://<ip>:6443 of master0, then the other masters.
    endpoints: Optional[list[ApiserverURL]] = None

    @model_validator(mode="after")
    def _check(self) -> "KubernetesConfig":
        problems = []
        if self.endpoints is not None:
            if not self.endpoints:
                problems.append(("endpoints", "is empty: list at least one https:// URL, or leave it "
                                 "out to use https://<ip>:6443 of the masters"))
            problems += duplicates(self.endpoints, "endpoints")
        if (self.kubeconfig is None) == (self.kubeconfig_path is None):
            given = "both are set" if self.kubeconfig is not None else "neither is set"
            problems.append(("", f"exactly one of kubeconfig / kubeconfig_path is required ({given})"))
        if self.kubeconfig is not None and not is_encrypted(self.kubeconfig):
            problems += self._kubeconfig_problems(self.kubeconfig.get_secret_value())
        raise_problems(problems)
        return self

    def _kubeconfig_problems(self, text: str) -> list[tuple[str, str]]:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
            return [("kubeconfig", "<secret> is not a kubeconfig (a YAML document with 'clusters')")]
        contexts = [c.get("name") for c in doc.get("contexts") or [] if isinstance(c, dict)]
        if self.context and self.context not in contexts:
            return [("context", f"{self.context!r} is not a context of kubeconfig (contexts: {', '.join(map(str, contexts)) or 'none'})")]
        return []
