"""What a command works with, each made once and only when needed: the stack (named with
`--stack` or the engine's selected one), its validated config and topology, the images the
config names, one engine, and SSH access to the hosts.

    with Session(args) as session:
        session.config, session.topology, session.images   # offline
        session.engine                                      # `pulumi` for this stack
        session.ssh()                                       # the key file lives until the end

Human output goes to ``session.out``: stdout, or stderr when `--json` keeps stdout for the
document.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from cli.common import CliError
from cli.engine import Engine, selected_stack
from cli.ssh import SshAccess, ssh_key_file
from config import ConfigError, StackConfig, load_stack_file, stack_file_path
from config.image_store import StoredImage
from topology import Topology


class Session:
    def __init__(self, args: argparse.Namespace, *, check_files: bool = False,
                 select_engine: bool = True, ssh_gate: AbstractContextManager | None = None):
        # check_files: also require the local files the config names (`validate`, preview);
        # the other commands take `--ssh-key` instead of the configured key path.
        # select_engine False: the engine only decrypts (`pulumi config get --stack`) and the
        # workspace's selected stack is left alone; ssh_gate: held around each SSH session
        # (`status --all` shares one bound between its stacks).
        self.check_files = check_files
        self.select_engine = select_engine
        self.ssh_gate = ssh_gate
        self.project_dir = Path(args.project_dir)
        self.pulumi: str | None = getattr(args, "pulumi", None)
        self.ssh_key: str | None = getattr(args, "ssh_key", None)
        self.json: bool = bool(getattr(args, "json", False))
        self.out = sys.stderr if self.json else sys.stdout
        if not args.stack:
            # Written back so that error documents and rerun hints name the stack.
            args.stack = selected_stack(self.project_dir, self.pulumi)
        self.stack: str = args.stack
        self.stack_file = stack_file_path(self.stack, self.project_dir)
        self._config: StackConfig | None = None
        self._images: list[StoredImage] | None = None
        self._engine: Engine | None = None
        self._ssh: SshAccess | None = None
        self._cleanup = ExitStack()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self._cleanup.close()

    # -- offline --------------------------------------------------------------------------------
    @property
    def config(self) -> StackConfig:
        """The validated stack config; a ConfigError becomes one CliError with one `error:` line
        per problem."""
        if self._config is None:
            try:
                self._config = load_stack_file(self.stack_file, check_files=self.check_files)
            except ConfigError as e:
                raise CliError("\n".join(e.lines())) from None
        return self._config

    def reload(self) -> StackConfig:
        """The config again, after the engine changed the stack file."""
        self._config = None
        return self.config

    @property
    def topology(self) -> Topology:
        return Topology.of(self.config)

    @property
    def images(self) -> list[StoredImage]:
        """The images the registry must serve, with the refs the image store pins (none when
        the stack names no image store: the deploy hosts serve what they hold)."""
        if self._images is None:
            self._images = self.config.apps.stored_images
        return self._images

    def store_password(self) -> str | None:
        """The image store's password, decrypted through the engine (None: anonymous)."""
        store = self.config.apps.image_store
        if store is None or store.password is None:
            return None
        return self.engine.get_value("apps.image_store.password")

    # -- the engine and the hosts ----------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.stack, self.project_dir, self.pulumi,
                                  select=self.select_engine)
        return self._engine

    def _passwords(self) -> dict[str, str]:
        """Each live host's SSH password, decrypted through the engine (only when the stack has
        passwords; values stay in memory and in the SshAccess' 0600 files)."""
        ssh = self.config.cluster.ssh
        if ssh.password is None and not any(h.password is not None for h in ssh.hosts.values()):
            return {}
        default = self.engine.get_value("cluster.ssh.password") if ssh.password is not None else None
        passwords = {}
        for ip in self.config.live_hosts:
            if ip in ssh.hosts and ssh.hosts[ip].password is not None:
                passwords[ip] = self.engine.get_value(f'cluster.ssh.hosts["{ip}"].password')
            elif default is not None:
                passwords[ip] = default
        return passwords

    def ssh(self) -> SshAccess:
        """SSH to the hosts with the stack's settings: `--ssh-key`, else the configured key path,
        else the stack's secret key decrypted through the engine (into a 0600 temp file removed
        when the session ends); the stack's passwords decrypted through the engine too."""
        if self._ssh is None:
            def decrypt() -> str:
                return self.engine.get_value("cluster.ssh.private_key") + "\n"
            key = self._cleanup.enter_context(
                ssh_key_file(self.config, self.project_dir, self.ssh_key, decrypt))
            self._ssh = self._cleanup.enter_context(SshAccess(self.config, key, self._passwords(), gate=self.ssh_gate))
        return self._ssh
