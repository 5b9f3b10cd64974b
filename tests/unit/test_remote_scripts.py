"""components/remote_scripts.py: what a host step sends is the script, compacted, with its libs."""

from __future__ import annotations

import subprocess

import pytest

from components.remote_scripts import LAST_LINE, SCRIPTS_DIR, compact, script_body, script_run

SCRIPTS = sorted(p.name for p in SCRIPTS_DIR.glob("*.sh"))


def bash_listing(source: str) -> str:
    """Every function and variable bash knows after evaluating ``source`` (main not called)."""
    probe = source + '\ndeclare -f\ndeclare -p | grep -Ev "^declare (-[a-zA-Z-]+ )?(BASH|_|SHLVL|PWD|OLDPWD|PIPESTATUS|LINENO|RANDOM|SECONDS|SRANDOM|EPOCH)"\n'
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def uncompacted(name: str) -> str:
    """The same composition as script_body, from the files as they are, comments and all."""
    text = (SCRIPTS_DIR / name).read_text()
    sourced = [p.name for p in (SCRIPTS_DIR / "lib").glob("*.sh")
               if p.name != "common.sh" and f'source "${{BASH_SOURCE[0]%/*}}/lib/{p.name}"' in text]
    libs = ["common.sh"] + sorted(sourced, key=lambda lib: text.index(f"/lib/{lib}\""))
    return (f"SCRIPT_NAME={name}\n" + "".join((SCRIPTS_DIR / "lib" / lib).read_text() for lib in libs)
            + text[:-len(LAST_LINE)])


@pytest.mark.parametrize("name", SCRIPTS)
def test_compacting_changes_nothing_bash_runs(name):
    """bash's own listing of every function (comments gone, strings and heredocs verbatim) and
    every variable is the same for the file and for what a step sends."""
    sent = script_body(name)
    assert sent.endswith('main "$@"; exit "$?"\n')
    assert bash_listing(sent[:-len('main "$@"; exit "$?"\n')]) == bash_listing(uncompacted(name))


@pytest.mark.parametrize("name", SCRIPTS)
def test_sent_scripts_have_no_comment_or_blank_lines_outside_heredocs(name):
    body = script_body(name)
    if "<<" not in body:
        assert not [line for line in body.splitlines() if not line.strip() or line.lstrip().startswith("#")]
    text = (SCRIPTS_DIR / name).read_text()
    libs = [p for p in (SCRIPTS_DIR / "lib").glob("*.sh") if p.name == "common.sh" or f"lib/{p.name}" in text]
    assert len(body) < len(text) + sum(len(p.read_text()) for p in libs)


def test_heredoc_bodies_are_kept_verbatim():
    text = "f() {\n  cat <<'EOF'\n# a comment in a file\n\n  kept\nEOF\n  # dropped\n}\n"
    assert compact(text) == "f() {\n  cat <<'EOF'\n# a comment in a file\n\n  kept\nEOF\n}\n"


def test_only_the_libs_a_script_sources_are_sent():
    assert "stop_registry()" in script_body("launch-registry.sh")
    assert "stop_registry()" in script_body("standby-registry.sh")
    assert "stop_registry()" not in script_body("configure-node.sh")
    assert "put_file()" in script_body("configure-node.sh")
    assert "containerd_certs_d_state()" in script_body("verify-registry.sh")
    for name in ("fill-from-store.sh", "sync-data.sh"):  # the machine running pulumi: ssh to a host
        assert "use_askpass()" in script_body(name) and "write_stamp()" in script_body(name)
    assert "use_askpass()" not in script_body("pull-data.sh")
    # The node step, the verification and the status probe find containerd's hosts dir alike.
    for name in ("configure-node.sh", "verify-registry.sh", "status-probe.sh"):
        assert "containerd_hosts_dir()" in script_body(name)


def test_a_comment_edit_does_not_change_what_is_sent(tmp_path, monkeypatch):
    """A step's input is the compacted text: editing a comment reruns no step."""
    import components.remote_scripts as rs

    (tmp_path / "lib").mkdir()
    for lib in ("common.sh", "trust.sh", "containerd.sh", "hosts-dir.sh", "entry.sh"):  # what configure-node.sh sources
        (tmp_path / "lib" / lib).write_text((SCRIPTS_DIR / "lib" / lib).read_text())
    original = (SCRIPTS_DIR / "configure-node.sh").read_text()
    monkeypatch.setattr(rs, "SCRIPTS_DIR", tmp_path)
    (tmp_path / "a.sh").write_text(original)
    (tmp_path / "b.sh").write_text(original.replace("# Usage:", "# Usage (edited):"))
    rs.script_body.cache_clear()
    try:
        a = rs.script_body("a.sh").replace("SCRIPT_NAME=a.sh", "")
        b = rs.script_body("b.sh").replace("SCRIPT_NAME=b.sh", "")
    finally:
        rs.script_body.cache_clear()
    assert a == b


def test_data_follows_the_script_on_stdin():
    run = script_run("configure-node.sh", "sea.hub", "198.18.0.12", "5000", data="PEM\n")
    assert run.command == "bash -s -- sea.hub 198.18.0.12 5000"
    assert run.stdin == script_body("configure-node.sh") + "PEM\n"
