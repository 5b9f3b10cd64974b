"""Loading the stack config: offline from the stack file, and at run time from engine values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from config import ConfigError, EncryptedSecret, from_pulumi_config, load_stack_file, read_runtime_config
from test_config import PASSWORD, base_values, render

REPO = Path(__file__).resolve().parents[2]


def stack_file(tmp_path: Path, values: dict, extra: dict | None = None) -> Path:
    config = {f"sealer-registry:{k}": v for k, v in values.items()}
    config.update(extra or {})
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def secure(ciphertext: str = "v1:bm9uY2U=:Y2lwaGVy") -> dict:
    return {"secure": ciphertext}


def offline_values(**overrides) -> dict:
    values = render(**overrides)
    values["registry"]["password"] = secure()
    values["registry"]["tls"]["ca_key"] = secure()
    return values


# -- offline ----------------------------------------------------------------------------------


def test_secure_values_count_as_present_and_are_recorded(tmp_path):
    """`secure:` objects become EncryptedSecret placeholders; their paths are remembered."""
    config = load_stack_file(stack_file(tmp_path, offline_values()))
    assert isinstance(config.registry.password, EncryptedSecret)
    assert config.secure_paths == {"registry.password", "registry.tls.ca_key"}


def test_encrypted_key_skips_content_checks_offline(tmp_path):
    """ca_key cannot be decrypted offline, so only ca_cert is parsed; the config is valid."""
    config = load_stack_file(stack_file(tmp_path, offline_values()))
    assert config.registry.tls.ca_key.get_secret_value() == "<encrypted>"


def test_plaintext_password_in_stack_file_is_rejected(tmp_path):
    """A plaintext password is refused with the command that stores it encrypted, not echoed."""
    values = offline_values()
    values["registry"]["password"] = PASSWORD
    with pytest.raises(ConfigError) as info:
        load_stack_file(stack_file(tmp_path, values))
    assert info.value.lines() == [
        "error: registry.password: must be a Pulumi secret (pulumi config set --secret --path registry.password ...)"
    ]
    assert PASSWORD not in str(info.value)


def test_other_namespaces_are_ignored(tmp_path):
    """Provider config (kubernetes:, command:) sits beside ours in the same file."""
    path = stack_file(tmp_path, offline_values(), {"kubernetes:context": "lab", "command:foo": 1})
    assert load_stack_file(path).master0 == "198.18.0.11"


def test_relative_history_file_is_resolved_against_the_stack_file(tmp_path):
    """history_file relative paths are relative to the project directory."""
    (tmp_path / "application.json").write_text(json.dumps(base_values()["apps"]["history"]))
    values = offline_values(apps__history_file="application.json")
    del values["apps"]["history"]
    assert load_stack_file(stack_file(tmp_path, values)).history.applications[1].name == "app1"


def test_empty_stack_file_reports_every_required_key(tmp_path):
    """An empty file lists all required keys at once."""
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_stack_file(path)
    assert info.value.paths() == ["master0", "distribution", "cluster", "registry", "apps", "kubernetes"]


def test_dev_stack_matches_the_documented_example():
    """Pulumi.dev.yaml: 3 masters, 2 nodes, pre, two deploy masters, two inline apps, lab paths."""
    config = load_stack_file(REPO / "Pulumi.dev.yaml")
    assert config.cluster.masters == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    assert config.cluster.nodes == ["198.18.0.21", "198.18.0.22"]
    assert config.distribution == "pre"
    assert config.deploy_hosts == ["198.18.0.11", "198.18.0.12"]
    assert len(config.apps.history.applications) == 2
    assert config.apps.image_store == ".lab/images"
    assert config.kubernetes.kubeconfig_path == ".lab/kubeconfig"


def test_dev_stack_secure_values_have_the_engine_shape():
    """Placeholders look like passphrase ciphertext (`v1:<nonce>:<ciphertext>`) until regenerated."""
    text = (REPO / "Pulumi.dev.yaml").read_text()
    secures = [line.split("secure:")[1].strip() for line in text.splitlines() if line.strip().startswith("secure:")]
    assert secures and all(s.startswith("v1:") and s.count(":") == 2 for s in secures)


# -- run time ---------------------------------------------------------------------------------


def engine_values(values: dict) -> dict:
    """What pulumi.runtime.get_config returns: objects and lists as JSON strings."""
    return {f"sealer-registry:{k}": json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in values.items()}


def test_runtime_values_are_parsed_from_json():
    """Objects arrive as JSON strings with namespaced keys."""
    config = from_pulumi_config(engine_values(render()), {"sealer-registry:registry"})
    assert config.registry.password.get_secret_value() == PASSWORD
    assert config.secure_paths == {"registry"}


def test_runtime_secret_outside_a_secret_key_is_rejected():
    """If the engine does not mark `registry` secret, the password was stored in plaintext."""
    with pytest.raises(ConfigError) as info:
        from_pulumi_config(engine_values(render()), set())
    assert "registry.password" in info.value.paths()
    assert "registry.tls.ca_key" in info.value.paths()


def test_runtime_invalid_json_is_rejected():
    """A broken object value is named, not a traceback."""
    values = engine_values(render())
    values["sealer-registry:cluster"] = "{not json"
    with pytest.raises(ConfigError) as info:
        from_pulumi_config(values, {"registry"})
    assert info.value.problems[0].path == "cluster"
    assert "is not valid JSON" in info.value.problems[0].message


@pytest.fixture
def engine_config():
    """Install config the way the language host does, and restore the previous state after."""
    from pulumi.runtime import config as runtime_config

    saved = (runtime_config.CONFIG.get(), runtime_config._SECRET_KEYS.get())

    def install(values: dict, secret_keys: list[str]) -> None:
        runtime_config.set_all_config(values, secret_keys)

    yield install
    runtime_config.CONFIG.set(saved[0])
    runtime_config._SECRET_KEYS.set(saved[1])


def test_read_runtime_config_reads_the_engine(engine_config):
    """read_runtime_config gets every key from pulumi.runtime and knows which are secret."""
    engine_config(engine_values(render()), ["sealer-registry:registry"])
    config = read_runtime_config()
    assert config.master0 == "198.18.0.11"
    assert config.secure_paths == {"registry"}


def test_read_runtime_config_rejects_unknown_keys(engine_config):
    """A typo'd key set with `pulumi config set` fails the run instead of being ignored."""
    values = engine_values(render())
    values["sealer-registry:master_0"] = "198.18.0.12"
    engine_config(values, ["sealer-registry:registry"])
    with pytest.raises(ConfigError) as info:
        read_runtime_config()
    assert "master_0" in info.value.paths()


def test_yaml_yes_no_are_strings_as_for_the_engine(tmp_path):
    """The engine reads `no` as the string "no" (YAML 1.2); offline validation must agree."""
    path = stack_file(tmp_path, offline_values())
    path.write_text(path.read_text().replace("insecure_mode: false", "insecure_mode: no"))
    with pytest.raises(ConfigError) as info:
        load_stack_file(path)
    assert "error: registry.local_registry.insecure_mode: expected true or false, got 'no'" in info.value.lines()
