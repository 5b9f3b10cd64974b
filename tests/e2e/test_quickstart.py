"""The README's quickstart, followed literally: every `$ ` line of its console block runs in bash,
in order, in a fresh copy of the project, with a fresh HOME, the toolchain's `pulumi` on PATH and
nothing else set. The operator's own parts are played by files the test makes first (the SSH key,
kubeconfig and boot history where the template expects them, the password file the block names)
and an `$EDITOR` that replaces each `<...>` of the template with the lab's
values (failing on any placeholder it does not know); `pulumi up` gets `--yes`, the answer the
operator gives at its prompt. The block must end with a healthy `status`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lab import store as lab_store
from lab.hosts import REPO
from tests.e2e.labstack import lab_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
PASSWORD = "quickstart-Passw0rd"


def quickstart_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quickstart on a real cluster"):]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block, "the quickstart has no console block"
    return [line[2:] for line in block.group(1).splitlines() if line.startswith("$ ")]


def project_copy(target: Path) -> Path:
    """The project as a clone has it (tracked files only: no .lab/, no other stacks)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        source, dest = REPO / name.decode(), target / name.decode()
        if source.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())
            dest.chmod(source.stat().st_mode & 0o777)
    return target


def editor(path: Path, values: dict[str, str]) -> Path:
    """An $EDITOR that fills the template's placeholders, as an operator would by hand."""
    path.write_text(
        f"#!{sys.executable}\n"
        "import re, sys\n"
        f"values = {values!r}\n"
        "text = open(sys.argv[1]).read()\n"
        "settings = [line.split('#')[0] for line in text.splitlines()]  # comments are prose\n"
        "left = sorted(set(re.findall(r'<[^<>]+>', '\\n'.join(settings))) - set(values))\n"
        "if left:\n"
        "    sys.exit(f'editor: placeholders this test does not know: {left}')\n"
        "for key, value in values.items():\n"
        "    text = text.replace(key, value)\n"
        "open(sys.argv[1], 'w').write(text)\n")
    path.chmod(0o755)
    return path


def test_the_readme_quickstart_runs_as_written(lab_env, toolchain_env, tmp_path):  # noqa: F811
    commands = quickstart_commands()
    assert commands[-1].startswith("python -m cli status")
    project = project_copy(tmp_path / "project")
    home = tmp_path / "home"
    home.mkdir()
    env = lab_env
    masters, nodes = env.masters, env.nodes
    # Files the operator has: the SSH key sealer uses, a kubeconfig, sealer's boot history, the
    # registry data, and a file with the password they chose.
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "id_ed25519").write_bytes(env.key_path.read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_bytes(env.kubeconfig.read_bytes())
    (home / ".sealer").mkdir()
    (home / ".sealer" / "application.json").write_bytes(env.history_file.read_bytes())
    (project / "registry-password.txt").write_text(PASSWORD + "\n")
    store = lab_store.ensure(env.lab, env.store)
    (project / "store-password.txt").write_text(store.password + "\n")
    values = {
        "<master0 IP>": masters[0], "<master1 IP>": masters[1], "<master2 IP>": masters[2],
        "<node IP>": nodes[0], "<sealer cluster name>": env.inventory["cluster"],
        "<registry user>": "admin", "<sha256:... of the cluster image>": env.cluster_image_id,
        "<store registry host:port>": store.registry, "<store user>": store.username,
        "<store CA file>": str(store.ca_file), "<pinned refs of each image>": json.dumps(store.images),
    }
    shell_env = {
        "HOME": str(home),
        "PATH": toolchain_env["PATH"],
        "EDITOR": str(editor(tmp_path / "editor", values)),
        "PYTHONPATH": "",
        **{k: v for k, v in toolchain_env.items()
           if k.startswith("PULUMI_") and k not in ("PULUMI_HOME", "PULUMI_BACKEND_URL",
                                                    "PULUMI_CONFIG_PASSPHRASE")},
        **({"SEALER_PLUGINS_DIR": os.environ["SEALER_PLUGINS_DIR"]}
           if "SEALER_PLUGINS_DIR" in os.environ else {}),
    }
    # `pulumi up` asks for a confirmation at a terminal; the operator answers yes.
    commands = [c + " --yes" if c.split("#")[0].split() == ["pulumi", "up"] else c for c in commands]
    assert any(c.startswith("pulumi up --yes") for c in commands)
    script = "set -euo pipefail\n" + "".join(
        f"echo {shlex.quote('$ ' + c)}\n{c}\n" for c in commands)
    done = subprocess.run(["bash", "-c", script], cwd=project, env=shell_env, text=True,
                          capture_output=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert re.search(r"^healthy: master0 \S+ serves \d+/\d+ images", done.stdout, re.M), done.stdout
    # The secrets the quickstart set are encrypted in the stack file, never plaintext.
    stack_file = (project / "Pulumi.prod.yaml").read_text()
    assert PASSWORD not in stack_file and "PRIVATE KEY" not in stack_file
    assert store.password not in stack_file
    assert re.findall(r"^[^#\n]*<[^<>\n]+>", stack_file, re.M) == []
    # Nothing else ran: the registry answers on master0.
    code = env.lab.run(masters[0], "curl -sk -o /dev/null -w '%{http_code}' --max-time 3 "
                                   "https://127.0.0.1:5000/v2/", check=False).stdout.strip()
    assert code == "401"
