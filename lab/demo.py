"""`python -m lab.demo [--keep]` (`make demo`): the whole story on this machine, end to end.

Deps and the engine toolchain, a lab of 3 masters + 2 nodes with small generated images, a real
control plane on the masters (an etcd member and a kube-apiserver on each; the kubeconfig names
master0's), a stack `demo` (file backend and passphrase under `.lab/demo/`), `cli init-pki`,
`pulumi up`, then master0 is killed (its packets dropped, its etcd member and apiserver frozen)
and `python -m cli recover master0` moves the registry to the second master, writing the records
through a live master's apiserver. `status` before and after; the measured RTO (kill ->
recovery verified) is printed. Everything is torn down at the end unless --keep (or KEEP=1).
Exit 0 only when the recovery was verified by the CLI and the final `status` is healthy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from config import PROJECT
from lab import controlplane as cplane
from lab import images as lab_images
from lab import store as lab_store
from lab.hosts import REPO, Lab, LabError

STACK = "demo"
PASSPHRASE = "sealer-lab"
NEEDED_BINARIES = ("ip", "nft", "unshare", "nsenter", "/usr/sbin/sshd", "ssh", "ssh-keygen",
                   "docker-registry", "curl", "rsync")


class DemoError(RuntimeError):
    pass


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def ensure_deps() -> None:
    missing = [b for b in NEEDED_BINARIES if not shutil.which(b)]
    if not missing:
        return
    say(f"installing lab dependencies (missing: {', '.join(missing)}): make lab-deps")
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    if subprocess.run(["make", "-C", str(REPO), "lab-deps"]).returncode != 0:
        raise DemoError("`make lab-deps` failed")


def ensure_toolchain() -> Path:
    from lab import toolchain

    say("engine toolchain (built once, then cached)")
    try:
        bin_dir = toolchain.ensure_built()
    except toolchain.ToolchainError as e:
        raise DemoError(f"the toolchain could not be built: {e}") from None
    why = toolchain.explain_missing(*toolchain.REQUIRED, "pulumi-language-python", "pulumi-resource-command")
    if why:
        raise DemoError(f"the program cannot run: {why}")
    print(f"toolchain: {bin_dir}")
    return bin_dir


def engine_env(bin_dir: Path, demo_dir: Path) -> dict[str, str]:
    from lab import toolchain

    (demo_dir / "state").mkdir(parents=True, exist_ok=True)
    (demo_dir / "pulumi-home").mkdir(parents=True, exist_ok=True)
    env = toolchain.env(dict(os.environ))
    env.update(PULUMI_BACKEND_URL=f"file://{demo_dir / 'state'}", PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
               PULUMI_HOME=str(demo_dir / "pulumi-home"), PYTHONPATH=str(REPO))
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return env


def pulumi(env: dict, *args: str, input: str | None = None, log: Path | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    argv = ["pulumi", "--non-interactive", *args]
    done = subprocess.run(argv, cwd=REPO, env=env, input=input, capture_output=True, text=True,
                          timeout=1800)
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise DemoError(f"`pulumi {' '.join(args)}` exited {done.returncode}:\n{tail}")
    return done


def cli(env: dict, *args: str) -> int:
    """`python -m cli ARGS --stack demo`, its output straight to the terminal."""
    print(f"$ python -m cli {' '.join(args)} --stack {STACK}", flush=True)
    return subprocess.run([sys.executable, "-m", "cli", *args, "--stack", STACK], cwd=REPO,
                          env=env, stdin=subprocess.DEVNULL, timeout=1800).returncode


def stack_config(lab: Lab, store: Path, history: Path, cluster_image_id: str,
                 kubeconfig: Path) -> dict:
    inv = lab.inventory()
    masters = [h["ip"] for h in inv["hosts"] if h["role"] == "master"]
    nodes = [h["ip"] for h in inv["hosts"] if h["role"] == "node"]
    return {
        "master0": masters[0],
        "down_hosts": [],
        "distribution": "pre",
        "cluster": {
            "name": inv["cluster"], "data_root": inv["data_root"], "masters": masters,
            "nodes": nodes,
            "ssh": {"user": "root", "port": 22, "private_key_path": str(lab.key_path),
                    "host_keys": {h["ip"]: h["host_key"] for h in inv["hosts"]}},
        },
        "registry": {"domain": "sea.hub", "port": 5000, "username": "admin",
                     "local_registry": {"deploy_hosts": masters[:2], "insecure_mode": False}},
        "apps": {"history_file": str(history),
                 "image_store": lab_store.config_for(lab.state, store),  # the lab's store registry
                 "cluster_image_id": cluster_image_id},
        "kubernetes": {"kubeconfig_path": str(kubeconfig), "cluster_identifier": inv["cluster"]},
    }


def run_demo(keep: bool) -> int:
    if os.geteuid() != 0:
        raise DemoError("the demo needs root (network namespaces, nftables, sshd per host)")
    lab = Lab()
    demo_dir = lab.state / "demo"
    stack_file = REPO / f"Pulumi.{STACK}.yaml"
    env: dict[str, str] | None = None
    started = time.monotonic()
    try:
        ensure_deps()
        bin_dir = ensure_toolchain()

        say("lab: 3 masters + 2 nodes (namespaced hosts with their own sshd)")
        lab.up(masters=3, nodes=2)
        summary = lab_images.generate(lab.state / "images", apps=3, app_size=1 << 20, layers=2,
                                      cluster_size=2 << 20, seed=0,
                                      history=lab.state / "application.json")
        images = 1 + len(summary["apps"])
        served = lab_store.ensure(lab, summary["store"])
        print(f"hosts: {', '.join(h.ip for h in lab.hosts())}; {images} images in the store "
              f"registry https://{served.registry} ({summary['store']})")

        say("control plane: an etcd member + kube-apiserver + kube-controller-manager on each master")
        t0 = time.monotonic()
        cp = cplane.up(lab, bin_dir=bin_dir)
        print(f"ready in {time.monotonic() - t0:.1f}s on {', '.join(cp.masters)}; kubeconfig "
              f"{cp.kubeconfig} names master0's apiserver {cp.server}")

        say(f"stack {STACK}: file backend {demo_dir / 'state'}")
        env = engine_env(bin_dir, demo_dir)
        pulumi(env, "stack", "rm", "--yes", "--force", "--stack", STACK, check=False)
        stack_file.unlink(missing_ok=True)
        pulumi(env, "stack", "init", STACK, "--secrets-provider", "passphrase")
        plain = stack_config(lab, Path(summary["store"]), Path(summary["history"]),
                             summary["cluster_image_id"], cp.kubeconfig)
        doc = yaml.safe_load(stack_file.read_text()) or {}
        doc["config"] = {f"{PROJECT}:{k}": v for k, v in plain.items()}
        stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        password = os.urandom(12).hex()
        pulumi(env, "config", "set", "--secret", "--path", "registry.password", "--stack", STACK,
               input=password)
        for path, value in lab_store.SECRETS.items():
            pulumi(env, "config", "set", "--secret", "--path", path, "--stack", STACK, input=value)
        if cli(env, "init-pki") != 0:
            raise DemoError("init-pki failed")

        say("deploy: pulumi up")
        t0 = time.monotonic()
        pulumi(env, "up", "--yes", "--skip-preview", "--stack", STACK, log=demo_dir / "deploy.log")
        print(f"deployed in {time.monotonic() - t0:.1f}s (log: {demo_dir / 'deploy.log'})")
        if cli(env, "status") != 0:
            raise DemoError("status is not healthy after the deploy")

        master0, master1 = plain["cluster"]["masters"][:2]
        say(f"disaster: kill master0 {master0} (its packets are dropped, its processes frozen: "
            "registry, etcd member, kube-apiserver)")
        lab.kill(master0)
        killed = time.monotonic()
        cli(env, "status")  # degraded: exit 1 expected

        say(f"recovery: master0 -> {master1}")
        recovered = cli(env, "recover", "master0", "--host", master1, "--yes")
        rto = time.monotonic() - killed
        if recovered != 0:
            raise DemoError(f"recover exited {recovered}")

        say("after the recovery")
        healthy = cli(env, "status")
        if healthy != 0:
            raise DemoError("status is not healthy after the recovery")
        say(f"RTO {rto:.1f}s from the kill of master0 to the verified recovery "
            f"(demo total {time.monotonic() - started:.0f}s)")
        return 0
    finally:
        if keep:
            say(f"kept (--keep): lab in {lab.state}, stack {STACK} (PULUMI_BACKEND_URL="
                f"file://{demo_dir / 'state'}, PULUMI_CONFIG_PASSPHRASE={PASSPHRASE}); "
                "`python -m lab down` removes the hosts")
        else:
            say("teardown")
            if env is not None:
                pulumi(env, "stack", "rm", "--yes", "--force", "--stack", STACK, check=False)
            stack_file.unlink(missing_ok=True)
            shutil.rmtree(demo_dir, ignore_errors=True)
            lab.down()  # the control plane lives on the masters: it goes with them


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", default=os.environ.get("KEEP") == "1",
                        help="leave the lab, control plane and stack up (also KEEP=1)")
    args = parser.parse_args(argv)
    try:
        return run_demo(args.keep)
    except (DemoError, LabError, cplane.ControlPlaneError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
