"""Stopping a registry that serves (scripts/lib/registry.sh stop_registry ROOTFS PORT, what
launch-registry.sh does to a warm standby it promotes) resets no connection a client had already
opened: new ones are refused (a TCP reset answers their SYN, so a node's HAProxy redispatches
them), the registry accepts what its queue holds, then drains.

Without the refusal, closing the listener resets every connection still in its accept queue
(the kernel completed their handshake: a client, or HAProxy in TCP mode, counts the connect as
done and the request then fails with EOF; dockerd does not retry it). The clients here open a
new TLS connection per request, many at once, from a lab node to a master's registry (sealer's
registry: its self-signed cert, htpasswd, basefs' config, started by the rootfs' init-registry.sh)
while it is stopped (the program's config: it drains on SIGTERM); each attempt ends "ok" (an HTTP status), "refused" (no connection) or "cut"
(the connection was made, then reset or closed before any answer). The stop without PORT is
measured beside it and printed, not asserted: how often a queue holds a connection at the close
depends on the machine's load."""
from __future__ import annotations

import json
import threading
import time

import pytest

from components.remote_scripts import SCRIPTS_DIR, compact
from material.registry_config import render_registry_yml
from tests.lab.runtime_fixtures import DOMAIN, PORT, ROOTFS, generate, serve, stop_serving

pytestmark = pytest.mark.lab

ROUNDS = 3
CLIENTS = 24
CLIENT_LIMIT_S = 30

# Runs on the node (python3 -, inside its namespaces): CLIENTS threads, each opening a TLS
# connection per request to HOST:PORT until STOP_AFTER seconds have passed; prints the counts.
CLIENT = r'''
import json, socket, ssl, sys, threading, time
host, port, seconds, clients = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
counts, lock, end = {"ok": 0, "refused": 0, "cut": 0, "other": 0}, threading.Lock(), time.monotonic() + seconds
def one():
    try:
        raw = socket.create_connection((host, port), timeout=5)
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "other"
    try:
        with ctx.wrap_socket(raw, server_hostname="sea.hub") as s:
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: sea.hub\r\nConnection: close\r\n\r\n")
            return "ok" if s.recv(12).startswith(b"HTTP/1.1 ") else "cut"
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError, EOFError):
        return "cut"
    except OSError:
        return "other"
def loop():
    while time.monotonic() < end:
        what = one()
        with lock:
            counts[what] += 1
        if what == "refused":
            time.sleep(0.01)
threads = [threading.Thread(target=loop) for _ in range(clients)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(counts))
'''


def stop_script(port: int | None) -> str:
    """common.sh and lib/registry.sh as the scripts get them, then stop_registry."""
    libs = "".join(compact((SCRIPTS_DIR / "lib" / n).read_text()) for n in ("common.sh", "registry.sh"))
    return libs + f"stop_registry {ROOTFS} {port or ''}\n"


def one_stop(lab, master: str, node: str, port: int | None) -> tuple[dict, str]:
    """Clients hammer the registry for a while, it is stopped in the middle, and started again
    for the next round; (the clients' counts, the stop's stderr)."""
    found: dict = {}

    def clients():
        done = lab.run(node, f"python3 - {master} {PORT} 6 {CLIENTS}", input=CLIENT,
                       timeout=CLIENT_LIMIT_S)
        found.update(json.loads(done.stdout))

    t = threading.Thread(target=clients)
    t.start()
    time.sleep(2)
    stopped = lab.run(master, "bash -s", input=stop_script(port), timeout=60)
    t.join(CLIENT_LIMIT_S + 5)
    lab.run(master, f"cd {ROOTFS}/scripts && bash init-registry.sh {PORT} {ROOTFS}/registry {DOMAIN}",
            timeout=60)
    return found, stopped.stderr


@pytest.fixture(scope="module")
def served(lab, tmp_path_factory):
    """A master's registry with the config the program launches (http.draintimeout: without it
    distribution exits on SIGTERM mid-request and every request in flight is cut as well)."""
    master = lab.masters()[0].ip
    serve(lab, [master], generate(tmp_path_factory.mktemp("store")))
    target = lab.host_path(master, f"{ROOTFS}/etc/registry_config.yml")
    target.write_text(render_registry_yml(domain=DOMAIN, port=PORT, tls=True, auth=True))
    lab.run(master, f"cd {ROOTFS}/scripts && bash init-registry.sh {PORT} {ROOTFS}/registry {DOMAIN}",
            timeout=60)
    yield master, lab.nodes()[0].ip
    stop_serving(lab, [master])


def test_a_stop_refuses_new_connections_and_resets_none(lab, served):
    master, node = served
    bare = [one_stop(lab, master, node, None)[0] for _ in range(ROUNDS)]
    print(f"\nstop without the refusal, {ROUNDS} rounds of {CLIENTS} clients: {bare}")
    drained = []
    for _ in range(ROUNDS):
        counts, said = one_stop(lab, master, node, PORT)
        assert f"new connections to :{PORT} refused" in said, said
        drained.append(counts)
    print(f"stop with the refusal: {drained}")
    for counts in drained:
        assert counts["ok"] > 0 and counts["refused"] > 0, counts  # the clients spanned the stop
        assert counts["cut"] == 0 and counts["other"] == 0, counts
    # Nothing left behind: the refusal's table is gone once the listener is closed.
    assert lab.run(master, "nft list table inet sealer_registry_drain", check=False).returncode != 0


def test_the_refusal_holds_while_the_registry_still_listens_and_goes_with_its_table(lab, served):
    """Deterministic, beside the race above: once refuse_new_connections returns, a new
    connection from a node is refused although the registry still listens (its queue empty);
    accept_new_connections removes the table and the same connection is answered."""
    master, node = served
    libs = stop_script(None).rsplit("stop_registry", 1)[0]
    connect = (f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 3 https://{master}:{PORT}/v2/; "
               "echo \" exit $?\"")
    done = lab.run(master, "bash -s", input=libs + f"refuse_new_connections {PORT}\n", timeout=30)
    try:
        assert f"new connections to :{PORT} refused" in done.stderr and "(queue: 0)" in done.stderr, done.stderr
        assert lab.run(master, f"ss -Hltn 'sport = :{PORT}'").stdout.strip(), "the registry stopped listening"
        assert lab.run(node, connect, check=False).stdout.split() == ["000", "exit", "7"]  # refused
    finally:
        lab.run(master, "bash -s", input=libs + "accept_new_connections\n", timeout=30)
    assert lab.run(master, "nft list table inet sealer_registry_drain", check=False).returncode != 0
    assert lab.run(node, connect, check=False).stdout.split() == ["401", "exit", "0"]
