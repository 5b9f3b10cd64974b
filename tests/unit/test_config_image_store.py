"""The image store (config/image_store.py, apps.image_store): a registry holding the cluster's
images, each image's refs pinned by digest.

Its refs become skopeo arguments (scripts/fill-from-store.sh) and arguments of verify-registry.sh
and status-probe.sh, which build registry URLs and storage paths from them, so each part is
checked whole against the registry's own grammar. Every rule has an accepting and a rejecting test.
"""

from __future__ import annotations

import pytest

from config import build_config
from config.image_store import ImageRef, parse_ref
from test_config import CLUSTER_IMG, DELETE, IMG, IMG1, STORE, assert_rejected, load, problems, render

DIGEST = "sha256:" + "cd" * 32
REFS = "apps__image_store__images"


def with_refs(*refs) -> dict:
    """The base config with the cluster image's refs replaced by ``refs``."""
    return render(**{f"{REFS}__{CLUSTER_IMG}": list(refs)})


# -- refs: repository:tag@sha256:<64 hex> ------------------------------------------------------


@pytest.mark.parametrize("repository, tag", [
    ("library/app0", "v1"), ("sealer/cluster-base", "v1.22.15"), ("app", "latest"),
    ("a/b__c/d-e.f", "3.9_rc-1"), ("calico/node", "V3"),
])
def test_refs_in_the_registry_grammar_are_loaded(repository, tag):
    config = load(with_refs(f"{repository}:{tag}@{DIGEST}"))
    [image, *_] = config.apps.stored_images
    assert image.image_id == CLUSTER_IMG
    assert image.refs == (ImageRef(repository, tag, DIGEST),)
    assert str(image.refs[0]) == f"{repository}:{tag}@{DIGEST}"


@pytest.mark.parametrize("ref, fragment", [
    (f"library/app0\n:v1@{DIGEST}", "repository 'library/app0\\n' of "),
    (f"../../etc:v1@{DIGEST}", "repository '../../etc'"),
    (f"Library/App:v1@{DIGEST}", "repository 'Library/App' of "),
    (f"app:v1 x@{DIGEST}", "tag 'v1 x' of "),
    (f"app:-v1@{DIGEST}", "tag '-v1'"),
    (f"app:v1@{DIGEST}\n", "is not 'repository:tag@sha256:<64 hex>'"),
    (f"app:v1@{DIGEST.upper()}", "is not 'sha256:' and 64 lowercase hex digits"),
    ("app:v1@sha256:abc", "digest 'sha256:abc'"),
    # A ref must be pinned: a tag alone can move in the store.
    ("app:v1", "is not 'repository:tag@sha256:<64 hex>' (a ref pinned by its manifest digest"),
    # ... and tagged: the copy in master0's registry keeps the tag the nodes pull.
    (f"app@{DIGEST}", "is not 'repository:tag@sha256:<64 hex>'"),
    (f"store.example.com:443/app:v1@{DIGEST}", "is not 'repository:tag@sha256:<64 hex>'"),
])
def test_refs_outside_the_grammar_are_refused(ref, fragment):
    lines = problems(with_refs(f"app:ok@{DIGEST}", ref))
    where = f"error: apps.image_store.images.{CLUSTER_IMG}[1]: "
    assert [line for line in lines if line.startswith(where) and fragment in line], lines
    assert len(lines) == 1, lines


def test_a_ref_that_is_not_a_string_is_refused():
    assert_rejected(with_refs(5), f"apps.image_store.images.{CLUSTER_IMG}[0]", "expected a string, got 5")


def test_parse_ref_says_which_part_is_wrong():
    assert parse_ref(f"a/b:v1@{DIGEST}") == ImageRef("a/b", "v1", DIGEST)
    for text, fragment in [(f"A:v1@{DIGEST}", "repository 'A'"), (f"a:.v1@{DIGEST}", "tag '.v1'"),
                           ("a:v1@sha256:0", "digest 'sha256:0'"), (None, "is not a string")]:
        with pytest.raises(ValueError) as info:
            parse_ref(text)
        assert fragment in str(info.value), (text, info.value)


# -- images: every image of the cluster, listed by id ------------------------------------------


def test_every_image_of_the_cluster_in_order_cluster_image_first():
    """stored_images follows image_ids (the cluster image, then the boot history's), whatever
    the order of the keys; an image the cluster does not run may be listed and is not copied."""
    extra = "sha256:" + "99" * 32
    images = dict(reversed(list(render()["apps"]["image_store"]["images"].items())))
    images[extra] = [f"unused:v1@{DIGEST}"]
    config = load(render(**{REFS: images}))
    assert [i.image_id for i in config.apps.stored_images] == [CLUSTER_IMG, IMG, IMG1] == config.image_ids
    assert [str(r) for r in config.apps.stored_images[1].refs] == [
        "library/app0:v1@sha256:" + "a0" * 32, "library/app0-init:v1@sha256:" + "a1" * 32]


@pytest.mark.parametrize("image_id, what", [(CLUSTER_IMG, "the cluster image"), (IMG1, "a boot-history image")])
def test_an_image_of_the_cluster_without_refs_is_refused_naming_it(image_id, what):
    lines = assert_rejected(render(**{f"{REFS}__{image_id}": DELETE}), "apps.image_store.images",
                            f"has no refs for {image_id} ({what})")
    assert len(lines) == 1, lines


def test_images_must_be_image_ids_with_refs():
    bad = "sha256:" + "AB" * 32
    assert_rejected(render(**{f"{REFS}__{bad}": [f"a:v1@{DIGEST}"]}), f"apps.image_store.images.{bad}",
                    "is not an image id 'sha256:<64 hex>'")
    assert_rejected(render(**{f"{REFS}__{IMG}": []}), f"apps.image_store.images.{IMG}", "lists no ref")
    assert_rejected(render(**{REFS: {}}), "apps.image_store.images", "is empty")
    assert_rejected(render(**{REFS: DELETE}), "apps.image_store.images", "is required")


# -- registry: host[:port] --------------------------------------------------------------------


@pytest.mark.parametrize("given, kept", [
    ("store.example.com", "store.example.com:443"), ("Store.Example.COM:5000", "store.example.com:5000"),
    ("198.18.0.5:8443", "198.18.0.5:8443"), ("registry-1", "registry-1:443"), ("127.0.0.1:5001", "127.0.0.1:5001"),
])
def test_registry_address_is_host_and_port_443_by_default(given, kept):
    assert load(render(apps__image_store__registry=given)).apps.image_store.registry == kept


@pytest.mark.parametrize("given, fragment", [
    ("https://store.example.com", "'https://store.example.com' is not host[:port] (give host[:port], without https://)"),
    ("http://198.18.0.5:5000", "(give host[:port], without https://)"),
    ("store.example.com/v2", "is not host[:port]"),
    ("store.example.com:", "is not host[:port]"),
    ("store.example.com\n", "is not host[:port]"),
    ("fd00::1", "is not host[:port]"),
    ("store.example.com:0", "port 0 is not in 1..65535"),
    ("store.example.com:70000", "port 70000 is not in 1..65535"),
    ("store_1.example.com", "is neither an IPv4 address nor a DNS name"),
    ("-store.example.com", "is neither an IPv4 address nor a DNS name"),
    ("0.0.0.0", "is not a registry's IPv4 address"),
    ("10.0.0.300", "'10.0.0.300' is not a valid IPv4 address, and a name whose last label is a number reads as one"),
    ("store.0x7f:5000", "a name whose last label is a number reads as one"),
    ("224.0.0.1:5000", "is not a registry's IPv4 address"),
    (5000, "expected a string, got 5000"),
])
def test_registry_that_is_not_host_and_port_is_refused(given, fragment):
    lines = assert_rejected(render(apps__image_store__registry=given), "apps.image_store.registry", fragment)
    assert len(lines) == 1, lines


def test_registry_is_required():
    assert_rejected(render(apps__image_store__registry=DELETE), "apps.image_store.registry", "is required")


# -- login: username and password together ----------------------------------------------------


def test_anonymous_or_a_full_login_is_accepted_and_the_password_never_printed():
    assert load(render()).apps.image_store.password is None
    store = load(render(apps__image_store__username="reader", apps__image_store__password="pull-s3cret")).apps.image_store
    assert store.username == "reader" and store.password.get_secret_value() == "pull-s3cret"
    assert "pull-s3cret" not in repr(store) and "pull-s3cret" not in str(store.model_dump())


def test_username_and_password_come_together():
    assert_rejected(render(apps__image_store__username="reader"), "apps.image_store.password",
                    "is required when username is set (username: 'reader')")
    assert_rejected(render(apps__image_store__password="pull-s3cret"), "apps.image_store.username",
                    "is required when password is set")


@pytest.mark.parametrize("password, fragment", [
    ("", "is empty"), ("a\nb", "<secret> holds a line break or control character"),
    ("a\x00b", "<secret> holds a line break or control character"),
])
def test_a_password_that_cannot_be_a_login_is_refused_without_showing_it(password, fragment):
    lines = assert_rejected(render(apps__image_store__username="reader", apps__image_store__password=password),
                            "apps.image_store.password", fragment)
    assert not any(password and password in line for line in lines), lines


@pytest.mark.parametrize("username", ["", "a b", "x\n"])
def test_a_username_outside_the_portable_set_is_refused(username):
    assert_rejected(render(apps__image_store__username=username, apps__image_store__password="p"),
                    "apps.image_store.username")


# -- the section itself -----------------------------------------------------------------------


@pytest.mark.parametrize("given", ["/var/lib/sealer-registry/images", ".lab/images", ""])
def test_a_path_where_the_registry_belongs_is_refused_with_the_new_form(given):
    """The store used to be a local directory: an old stack file's path gets the new form and
    where it is documented."""
    lines = assert_rejected(render(apps__image_store=given), "apps.image_store", f"{given!r} is a path; "
                            "the image store is a registry holding the cluster's images: {registry: host[:port]")
    assert len(lines) == 1 and lines[0].endswith("(docs/config.md, 'Config reference')"), lines


def test_unknown_keys_of_the_store_are_refused():
    assert_rejected(render(apps__image_store__path="/srv/images"), "apps.image_store.path",
                    "unknown key 'path' (allowed: registry, username, password, ca_file, images)")


def test_without_a_store_no_image_is_copied():
    config = build_config(render(apps__image_store=DELETE, apps__cluster_image_id=DELETE))
    assert config.apps.stored_images == [] and config.image_ids == [] and not config.apps.copies_data
    assert load(render()).apps.image_store.registry == f"{STORE}:443"
