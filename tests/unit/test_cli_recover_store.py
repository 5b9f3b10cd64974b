"""`recover`'s preflight for a stack with an image store: the new master0 is filled from the
store unless its own replica already holds every image; the store must serve every pinned ref
(cli/store.py, stubbed here: tests/unit/test_cli_store.py runs it against a stand-in skopeo) and
the new master0 must have room for what it does not hold yet."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from cli import recover
from cli.common import CliError
from cli.probe import HostProbe
from cli.store import StoreCheck
from tests.unit.test_cli_status import IMAGES, M1, M2, make_config

PROJECT = Path("/srv/project")
GiB = 1 << 30


def session(distribution="post", password="st0re-Pull-s3cret"):
    config = make_config(distribution=distribution)
    return SimpleNamespace(config=config, images=IMAGES, project_dir=PROJECT,
                           store_password=lambda: password)


@pytest.fixture
def stubs(monkeypatch):
    """check_store, the host probe and the apiserver check, stubbed; records the store's calls."""
    state = SimpleNamespace(calls=[], check=StoreCheck("store.example.com:443", refs=3, served=3, bytes=5 * GiB),
                            probe=HostProbe(M2, reachable=True, disk_avail=40 * GiB, registry_bytes=GiB,
                                            missing_refs=[str(IMAGES[1].refs[0])]))

    def check_store(store, password, images, project_dir):
        state.calls.append((store.registry, password, images, project_dir))
        return state.check

    monkeypatch.setattr(recover, "check_store", check_store)
    monkeypatch.setattr(recover, "preflight_probe", lambda s, host: state.probe)
    monkeypatch.setattr(recover, "other_live_deploy_hosts", lambda s, host, down: {})
    monkeypatch.setattr(recover, "stack_outputs", lambda s: {})
    monkeypatch.setattr(recover.apiserver, "check", lambda s, down, master0: SimpleNamespace(endpoint=f"https://{master0}:6443"))
    return state


def test_post_mode_fills_an_incomplete_replica_from_the_store_asked_with_its_login(stubs):
    result = recover.preflight(session(), M2, [M1])
    assert stubs.calls == [("store.example.com:443", "st0re-Pull-s3cret", IMAGES, PROJECT)]
    assert result["data_source"] == "the image store store.example.com:443"
    assert result["needed_bytes"] == 4 * GiB  # what the store holds, less what the host holds
    assert (result["replica_images"], result["images_expected"]) == (1, 2)


def test_a_complete_replica_needs_nothing_from_the_store(stubs):
    """The fill step finds every ref served and copies nothing: a store that is down does not
    block a recovery that does not need it."""
    stubs.probe.missing_refs = []
    for mode in ("pre", "post"):
        result = recover.preflight(session(mode), M2, [M1])
        assert (result["data_source"], result["needed_bytes"]) == (f"{M2}'s own replica", 0)
    assert stubs.calls == []


def test_a_store_that_does_not_serve_every_ref_refuses_naming_the_first_problem(stubs):
    stubs.check = StoreCheck("store.example.com:443", refs=3, served=1, bytes=GiB,
                             problems=["library/app0:v1@sha256:…: manifest unknown", "x: y"])
    with pytest.raises(CliError) as info:
        recover.preflight(session(), M2, [M1])
    assert str(info.value) == (
        "the image store store.example.com:443 (apps.image_store.registry) serves 1 of 3 refs: "
        "library/app0:v1@sha256:…: manifest unknown (and 1 more); nothing was changed")


def test_not_enough_room_for_the_store_s_images_refuses(stubs):
    stubs.probe.disk_avail = 2 * GiB
    with pytest.raises(CliError, match=r"has 2\.0 GiB free under .*, the registry data needs 4\.0 GiB more"):
        recover.preflight(session(), M2, [M1])


def test_an_anonymous_store_is_asked_without_a_password(stubs):
    recover.preflight(session(password=None), M2, [M1])
    assert stubs.calls[0][1] is None


def test_pre_mode_with_an_incomplete_replica_is_refused_before_the_store_is_asked(stubs):
    with pytest.raises(CliError, match=f"{M2}'s replica holds 1 of 2 images"):
        recover.preflight(session("pre"), M2, [M1])
    assert stubs.calls == []


def test_the_session_asks_the_engine_for_the_store_password_only_when_there_is_one(tmp_path):
    """Session.store_password decrypts through the engine (`pulumi config get`); an anonymous
    store never starts it. Session.images are the config's pinned refs, cluster image first."""
    import argparse

    import yaml

    from cli.session import Session
    from test_config import render

    def stack(**overrides) -> Session:
        values = render(**overrides)
        values["registry"]["password"] = values["registry"]["tls"]["ca_key"] = {"secure": "v1:bm9uY2U=:Y2lwaGVy"}
        if "password" in values["apps"]["image_store"]:
            values["apps"]["image_store"]["password"] = {"secure": "v1:bm9uY2U=:c3RvcmU="}
        (tmp_path / "Pulumi.t.yaml").write_text(yaml.safe_dump(
            {"config": {f"sealer-registry:{k}": v for k, v in values.items()}}))
        return Session(argparse.Namespace(project_dir=str(tmp_path), stack="t"))

    asked = []
    engine = SimpleNamespace(get_value=lambda path: asked.append(path) or "st0re-Pull-s3cret")
    anonymous = stack()
    anonymous._engine = engine
    assert anonymous.store_password() is None and asked == []
    assert [i.image_id for i in anonymous.images] == anonymous.config.image_ids
    login = stack(apps__image_store__username="reader", apps__image_store__password="x")
    login._engine = engine
    assert login.store_password() == "st0re-Pull-s3cret" and asked == ["apps.image_store.password"]
