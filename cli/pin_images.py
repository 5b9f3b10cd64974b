"""`pin-images`: the `apps.image_store.images` block, each ref pinned to the digest the store
serves now."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

import yaml

from cli.common import EXIT_OK, CliError, guarded
from cli.store import StoreReader
from config.image_store import ImageStoreConfig, parse_ref

NAME = "pin-images"
HELP = "print apps.image_store.images with every REPOSITORY:TAG pinned to the store's digest"
DESCRIPTION = """\
Asks the image store (a registry holding the cluster's images) for the manifest digest of each
REPOSITORY:TAG and prints the `images:` block of apps.image_store with every ref pinned
(REPOSITORY:TAG@sha256:...), ready to paste into the stack file. Read-only; nothing else is
contacted. TLS is verified (--ca-file, else the system's trust); the password is read from
--password-file or asked for at the terminal, never taken on the command line. Each argument
is IMAGE_ID=REF[,REF...]: a sealer image id (the cluster image's, a boot-history application's)
and the container images it needs. Needs skopeo.
"""
EPILOG = """\
example:
  $ python -m cli pin-images --registry harbor.example.com --username reader \\
      --password-file store-password.txt --ca-file harbor-ca.pem \\
      sha256:9b1f...=library/nginx:1.25,library/redis:7.2
  images:
    sha256:9b1f...:
    - library/nginx:1.25@sha256:4c0f...
    - library/redis:7.2@sha256:e422...
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", required=True, metavar="HOST[:PORT]",
                        help="the image store (HTTPS; port 443 when left out)")
    parser.add_argument("--username", help="the store login (read access is enough)")
    parser.add_argument("--password-file", metavar="PATH",
                        help="a file holding the store password (else asked at the terminal)")
    parser.add_argument("--ca-file", metavar="PATH", help="PEM of the CA the store's certificate chains to")
    parser.add_argument("images", nargs="+", metavar="IMAGE_ID=REF[,REF...]")


def _password(args: argparse.Namespace) -> str | None:
    if args.username is None:
        return None
    if args.password_file:
        try:
            return Path(args.password_file).expanduser().read_text().rstrip("\n")
        except OSError as e:
            raise CliError(f"--password-file {args.password_file}: {e.strerror or e}") from None
    if not sys.stdin.isatty():
        raise CliError("--username needs --password-file (no terminal to ask the password at)")
    return getpass.getpass(f"password of {args.username} at {args.registry}: ")


def parse_images(given: list[str]) -> dict[str, list[tuple[str, str]]]:
    """IMAGE_ID=REPOSITORY:TAG[,...] -> {image id: [(repository, tag)]}, each part checked."""
    out: dict[str, list[tuple[str, str]]] = {}
    for arg in given:
        image_id, sep, refs = arg.partition("=")
        if not sep or not refs:
            raise CliError(f"{arg!r} is not IMAGE_ID=REPOSITORY:TAG[,REPOSITORY:TAG...]")
        for ref in refs.split(","):
            repository, colon, tag = ref.rpartition(":")
            if not colon or "/" in tag:
                raise CliError(f"{ref!r} in {arg!r} is not REPOSITORY:TAG")
            try:  # the registry grammar, as the stack config checks it (any digest will do here)
                parse_ref(f"{ref}@sha256:{'0' * 64}")
            except ValueError as e:
                raise CliError(f"{arg!r}: {e}") from None
            out.setdefault(image_id, []).append((repository, tag))
    return out


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    wanted = parse_images(args.images)
    password = _password(args)
    try:  # the same rules as apps.image_store in a stack file (a placeholder ref per image)
        store = ImageStoreConfig.model_validate({
            "registry": args.registry, "username": args.username,
            "password": password, "ca_file": args.ca_file,
            "images": {i: [f"{r}:{t}@sha256:{'0' * 64}" for r, t in refs] for i, refs in wanted.items()}})
    except ValueError as e:
        raise CliError(f"invalid arguments: {str(e).splitlines()[-1].strip()}") from None
    pinned: dict[str, list[str]] = {}
    with StoreReader(store, password, Path.cwd()) as reader:
        for image_id, refs in wanted.items():
            for repository, tag in refs:
                try:
                    digest = reader.digest(repository, tag)
                except RuntimeError as e:
                    raise CliError(f"{args.registry} cannot serve {repository}:{tag}: {e}") from None
                pinned.setdefault(image_id, []).append(f"{repository}:{tag}@{digest}")
    print(yaml.safe_dump({"images": pinned}, sort_keys=False, default_flow_style=False), end="")
    return EXIT_OK
