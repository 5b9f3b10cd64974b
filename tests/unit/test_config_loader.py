"""Loading the stack config: offline from the stack file, and at run time from engine values."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from config import ConfigError, EncryptedSecret, StackConfig, from_pulumi_config, load_stack_file, read_runtime_config
from config.loader import read_history_file
from test_config import DELETE, PASSWORD, PKI, base_values, problems, render

REPO = Path(__file__).resolve().parents[2]


def stack_file(tmp_path: Path, values: dict, extra: dict | None = None) -> Path:
    config = {f"sealer-registry:{k}": v for k, v in values.items()}
    config.update(extra or {})
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def secure(ciphertext: str = "v1:bm9uY2U=:Y2lwaGVy") -> dict:
    return {"secure": ciphertext}


def local_files(base: Path) -> dict:
    """Real files for the config's local paths under `base`; overrides for render()."""
    (base / "keys").mkdir(parents=True, exist_ok=True)
    (base / "keys" / "id_ed25519").write_text("key\n")
    (base / "kubeconfig").write_text("apiVersion: v1\n")
    (base / "store-ca.pem").write_text(PKI.ca_cert)
    return {"cluster__ssh__private_key_path": str(base / "keys" / "id_ed25519"),
            "kubernetes__kubeconfig_path": str(base / "kubeconfig"),
            "apps__image_store__ca_file": str(base / "store-ca.pem")}


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


def test_image_store_password_in_stack_file_must_be_a_pulumi_secret(tmp_path):
    """The store's password is a secret like the registry's: plaintext is refused with the
    command that stores it, not echoed; encrypted it counts as present and is recorded."""
    values = offline_values(apps__image_store__username="reader", apps__image_store__password="pull-s3cret")
    with pytest.raises(ConfigError) as info:
        load_stack_file(stack_file(tmp_path, values))
    assert info.value.lines() == [
        "error: apps.image_store.password: must be a Pulumi secret "
        "(pulumi config set --secret --path apps.image_store.password ...)"]
    assert "pull-s3cret" not in str(info.value)
    values["apps"]["image_store"]["password"] = secure()
    config = load_stack_file(stack_file(tmp_path, values))
    assert isinstance(config.apps.image_store.password, EncryptedSecret)
    assert "apps.image_store.password" in config.secure_paths


def test_image_store_password_at_run_time_must_come_from_a_secret_key(tmp_path):
    """At run time `apps` must be a secret key of the engine when it holds the store's password."""
    values = engine_values(render(apps__image_store__username="reader", apps__image_store__password="pull-s3cret"))
    with pytest.raises(ConfigError) as info:
        from_pulumi_config(values, {"sealer-registry:registry"})
    assert "apps.image_store.password" in info.value.paths()
    assert "pull-s3cret" not in str(info.value)
    config = from_pulumi_config(values, {"sealer-registry:registry", "sealer-registry:apps"})
    assert config.apps.image_store.password.get_secret_value() == "pull-s3cret"


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
    assert config.apps.image_store.registry == "198.18.0.1:5443"
    assert config.apps.image_store.ca_file == ".lab/store-registry/ca/store-ca.crt"
    assert config.image_ids == [config.apps.cluster_image_id, *config.history.image_ids]
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


def test_read_runtime_config_reads_the_engine(engine_config, tmp_path):
    """read_runtime_config gets every key from pulumi.runtime and knows which are secret."""
    engine_config(engine_values(render(**local_files(tmp_path))), ["sealer-registry:registry"])
    config = read_runtime_config()
    assert config.master0 == "198.18.0.11"
    assert config.secure_paths == {"registry"}


def test_read_runtime_config_rejects_unknown_keys(engine_config, tmp_path):
    """A typo'd key set with `pulumi config set` fails the run instead of being ignored."""
    values = engine_values(render(**local_files(tmp_path)))
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


# -- local files the config names (cli validate and preview) ----------------------------------


def test_local_files_that_exist_are_accepted(tmp_path):
    """With check_files, existing files and a file of PEM certificates pass."""
    path = stack_file(tmp_path, offline_values(**local_files(tmp_path)))
    assert load_stack_file(path, check_files=True).apps.image_store.ca_file == str(tmp_path / "store-ca.pem")


def test_missing_local_files_are_all_reported_with_their_fields(tmp_path):
    """Every unreadable path is one problem on its field, in one pass, next to model problems."""
    values = offline_values(cluster__ssh__private_key_path="keys/id", kubernetes__kubeconfig_path="/nonexistent/kc",
                            apps__image_store__ca_file="ca.pem", registry__port=0)
    with pytest.raises(ConfigError) as info:
        load_stack_file(stack_file(tmp_path, values), check_files=True)
    assert info.value.lines() == [
        "error: registry.port: 0 is not a valid port (1-65535)",
        f"error: cluster.ssh.private_key_path: cannot read keys/id ({tmp_path}/keys/id): No such file or directory",
        "error: kubernetes.kubeconfig_path: cannot read /nonexistent/kc: No such file or directory",
        f"error: apps.image_store.ca_file: cannot read ca.pem ({tmp_path}/ca.pem): No such file or directory",
    ]


def test_a_directory_where_a_file_belongs_is_refused(tmp_path):
    """The key, the kubeconfig and the store's CA file are files."""
    values = offline_values(**{**local_files(tmp_path), "cluster__ssh__private_key_path": str(tmp_path / "keys"),
                               "apps__image_store__ca_file": str(tmp_path / "keys")})
    with pytest.raises(ConfigError) as info:
        load_stack_file(stack_file(tmp_path, values), check_files=True)
    assert info.value.lines() == [
        f"error: cluster.ssh.private_key_path: cannot read {tmp_path}/keys: it is a directory",
        f"error: apps.image_store.ca_file: cannot read {tmp_path}/keys: it is a directory",
    ]


@pytest.mark.parametrize("content, problem", [
    (PKI.ca_key, "is not a file of PEM certificates (-----BEGIN CERTIFICATE-----)"),
    ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
     "is not a file of PEM certificates (-----BEGIN CERTIFICATE-----)"),
    ("", "is not a file of PEM certificates (-----BEGIN CERTIFICATE-----)"),
])
def test_a_store_ca_file_that_holds_no_certificate_is_refused(tmp_path, content, problem):
    """skopeo would take any file as the store's CA and fail at the fill: the loader reads it."""
    files = local_files(tmp_path)
    (tmp_path / "store-ca.pem").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_stack_file(stack_file(tmp_path, offline_values(**files)), check_files=True)
    assert info.value.lines() == [f"error: apps.image_store.ca_file: {tmp_path}/store-ca.pem {problem}"]


def test_a_store_ca_file_with_a_chain_of_certificates_is_accepted(tmp_path):
    files = local_files(tmp_path)
    (tmp_path / "store-ca.pem").write_text(PKI.ca_cert + PKI.leaf_cert)
    path = stack_file(tmp_path, offline_values(**files))
    assert load_stack_file(path, check_files=True).apps.image_store.ca_file == str(tmp_path / "store-ca.pem")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file_is_refused(tmp_path):
    files = local_files(tmp_path)
    key = Path(files["cluster__ssh__private_key_path"])
    key.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_stack_file(stack_file(tmp_path, offline_values(**files)), check_files=True)
    assert info.value.lines() == [f"error: cluster.ssh.private_key_path: cannot read {key}: Permission denied"]


def test_relative_and_home_paths_resolve_like_the_program_reads_them(tmp_path, monkeypatch):
    """Relative paths are relative to the stack file's directory, `~` is the home directory."""
    local_files(tmp_path / "project")
    local_files(tmp_path / "home")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    values = offline_values(cluster__ssh__private_key_path="~/keys/id_ed25519", kubernetes__kubeconfig_path="kubeconfig",
                            apps__image_store__ca_file="store-ca.pem")
    config = load_stack_file(stack_file(tmp_path / "project", values), check_files=True)
    assert config.apps.image_store.ca_file == "store-ca.pem"
    values["apps"]["image_store"]["ca_file"] = "~/store-ca.pem"
    assert load_stack_file(stack_file(tmp_path / "project", values), check_files=True).apps.image_store.ca_file == "~/store-ca.pem"


def test_files_are_not_checked_unless_asked(tmp_path):
    """status/recover/rejoin and init-pki read the config without the files (they take --ssh-key)."""
    values = offline_values(apps__image_store__ca_file="/nonexistent/ca.pem")
    assert load_stack_file(stack_file(tmp_path, values)).apps.image_store.ca_file == "/nonexistent/ca.pem"


def test_runtime_config_checks_the_files_at_preview(engine_config, tmp_path, monkeypatch):
    """`__main__` reads the config through read_runtime_config, which checks the files against
    the program's directory, so a preview refuses a missing key as `cli validate` does."""
    monkeypatch.chdir(tmp_path)
    files = local_files(tmp_path)
    engine_config(engine_values(render(**{**files, "cluster__ssh__private_key_path": "missing/id"})),
                  ["sealer-registry:registry"])
    with pytest.raises(ConfigError) as info:
        read_runtime_config()
    assert info.value.lines() == [
        f"error: cluster.ssh.private_key_path: cannot read missing/id ({tmp_path}/missing/id): No such file or directory"]


# -- the boot history file (read by the loader, reported at apps.history_file) ---------------


def history_file_values(given: str, **overrides) -> dict:
    return render(apps__history=DELETE, apps__history_file=given, **overrides)


def test_history_file_problems_keep_their_place_among_the_others(tmp_path):
    """The loader reads the file, but its problems come where the field is: after registry's,
    before kubernetes', before the rules that relate hosts across sections."""
    lines = problems(history_file_values("nope.json", registry__domain="sea_hub", kubernetes__context="a\tb",
                                         master0="198.18.0.21"), base_dir=tmp_path)
    assert [line.split(": ")[1] for line in lines] == [
        "registry.domain", "apps.history_file", "kubernetes.context", "master0", "registry.local_registry.deploy_hosts"]
    assert lines[1] == f"error: apps.history_file: cannot read nope.json ({tmp_path}/nope.json): No such file or directory"


def test_history_file_is_read_at_run_time(engine_config, tmp_path, monkeypatch):
    """A preview (read_runtime_config) takes the history from the file, relative to the program's directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "application.json").write_text(json.dumps(base_values()["apps"]["history"]))
    engine_config(engine_values(history_file_values("application.json", **local_files(tmp_path))),
                  ["sealer-registry:registry"])
    assert read_runtime_config().history.launch.app_names == ["app0", "app1"]


def test_history_file_is_not_reported_while_its_section_is_invalid(tmp_path):
    """As for any model rule, a section whose fields fail does not report its history file."""
    lines = problems(history_file_values("nope.json", apps__cluster_image_id="sha256:xyz"), base_dir=tmp_path)
    assert len(lines) == 1 and lines[0].startswith("error: apps.cluster_image_id: 'sha256:xyz' is not an image id"), lines


def test_read_history_file_accepts_a_boot_history_and_names_the_file_in_problems(tmp_path):
    """read_history_file gives the validated history, or problems naming the path and the field."""
    (tmp_path / "good.json").write_text(json.dumps(base_values()["apps"]["history"]))
    (tmp_path / "list.json").write_text("[1]")
    good = read_history_file("good.json", tmp_path)
    assert (good.history.image_ids, good.problems) == (["sha256:" + "ab" * 32, "sha256:" + "ef" * 32], ())
    bad = read_history_file(str(tmp_path / "list.json"), None)
    assert (bad.history, bad.problems) == (None, (f"{tmp_path}/list.json: .: expected an object, got [1]",))


def test_models_without_the_loader_refuse_an_unread_history_file():
    """The models never read files: validated directly, a history_file is refused, not read."""
    with pytest.raises(ValidationError) as info:
        StackConfig.model_validate(history_file_values("/nonexistent/application.json"))
    assert "history_file: was not read (config.loader.build_config reads it before validation)" in str(info.value)
