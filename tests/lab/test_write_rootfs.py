"""scripts/write-rootfs.sh over real SSH, as the program runs it: the files land with their modes,
a rerun changes nothing, and the staging directory under the rootfs is gone afterwards, also when
the payload is broken (its cleanup is a function, not a trap string holding the rootfs path)."""
from __future__ import annotations

from components.deploy_host import rootfs_files, rootfs_payload
from components.remote_scripts import script_run
from material import build_material, pki

ROOTFS = "/var/lib/sealer/data/lab/rootfs"
FILES = {"etc/registry_config.yml": "version: 0.1\n", "etc/registry_htpasswd": "admin:$2b$10$x\n",
         "certs/sea.hub.crt": "crt\n", "certs/sea.hub.key": "key\n"}


def write(lab, ip, payload: str):
    run = script_run("write-rootfs.sh", ROOTFS, data=payload)
    return lab.ssh(ip, run.command, input=run.stdin, check=False)


def staging_dirs(lab, ip) -> list[str]:
    return lab.run(ip, f"find {ROOTFS} -maxdepth 1 -name '.sealer-registry.*'").stdout.split()


def test_files_land_once_and_no_staging_dir_stays(lab):
    ip = lab.masters()[0].ip
    first = write(lab, ip, rootfs_payload(FILES))
    assert first.returncode == 0, first.stderr
    for path, content in FILES.items():
        mode = "600" if path.endswith((".key", "htpasswd")) else "644"
        assert lab.run(ip, f"stat -c %a {ROOTFS}/{path} && cat {ROOTFS}/{path}").stdout == f"{mode}\n{content}"
    assert staging_dirs(lab, ip) == []
    again = write(lab, ip, rootfs_payload(FILES))
    assert again.returncode == 0 and again.stderr.count("unchanged: ") == len(FILES), again.stderr
    assert staging_dirs(lab, ip) == []


def test_a_broken_payload_fails_and_leaves_no_staging_dir(lab):
    ip = lab.masters()[1].ip
    done = write(lab, ip, "not base64 at all\n")
    assert done.returncode != 0
    assert staging_dirs(lab, ip) == []


def test_a_quote_in_the_rootfs_path_never_becomes_code(lab):
    """The config refuses such a data_root; the script still treats ROOTFS as data only."""
    ip = lab.masters()[2].ip
    rootfs = "/tmp/write-rootfs-test/x';touch /tmp/write-rootfs-pwned;'"
    lab.run(ip, "rm -rf /tmp/write-rootfs-test /tmp/write-rootfs-pwned")
    run = script_run("write-rootfs.sh", rootfs, data=rootfs_payload(FILES))
    done = lab.ssh(ip, run.command, input=run.stdin, check=False)
    assert done.returncode == 0, done.stderr
    assert lab.run(ip, "test -e /tmp/write-rootfs-pwned", check=False).returncode == 1
    assert lab.run(ip, "find /tmp/write-rootfs-test -name '.sealer-registry.*'").stdout == ""
    lab.run(ip, "rm -rf /tmp/write-rootfs-test")


# sealer v0.8's own settings file, as its cluster images ship it (pkg/runtime/registry.go@v0.8.7).
V08_SETTINGS = "ip: 198.18.0.11\ndomain: sea.hub\nport: \"5000\"\nusername: admin\npassword: sealer-v08\n"


def test_sealer_v08_registry_yml_keeps_its_bytes(lab):
    """In sealer v0.8, <rootfs>/etc/registry.yml is sealer's own settings file: the program's
    real rootfs payload (config, htpasswd, cert pair) is written around it and leaves its bytes,
    mode and inode as they were; a payload that names it is refused and writes nothing."""
    ip = lab.masters()[0].ip
    rootfs = "/tmp/write-rootfs-v08/rootfs"
    lab.run(ip, f"rm -rf /tmp/write-rootfs-v08 && mkdir -p {rootfs}/etc")
    lab.ssh(ip, f"cat > {rootfs}/etc/registry.yml && chmod 640 {rootfs}/etc/registry.yml",
            input=V08_SETTINGS)
    before = lab.run(ip, f"stat -c '%a %i %s' {rootfs}/etc/registry.yml").stdout
    ca_cert, ca_key = pki.generate_ca()
    material = build_material(domain="sea.hub", port=5000, deploy_ips=[ip], insecure=False,
                              username="admin", password="sealer-v08-pass", ca_cert=ca_cert,
                              ca_key=ca_key)
    files = rootfs_files(material, "sea.hub")
    run = script_run("write-rootfs.sh", rootfs, data=rootfs_payload(files))
    done = lab.ssh(ip, run.command, input=run.stdin, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("wrote: ") == len(files) == 4, done.stderr
    assert lab.run(ip, f"cat {rootfs}/etc/registry.yml").stdout == V08_SETTINGS
    assert lab.run(ip, f"stat -c '%a %i %s' {rootfs}/etc/registry.yml").stdout == before
    assert lab.run(ip, f"cat {rootfs}/etc/registry_config.yml").stdout == material.registry_yml

    bad = rootfs_payload({**files, "etc/registry.yml": material.registry_yml,
                          "etc/other.yml": "x\n"})
    run = script_run("write-rootfs.sh", rootfs, data=bad)
    refused = lab.ssh(ip, run.command, input=run.stdin, check=False)
    assert refused.returncode != 0
    assert "etc/registry.yml, sealer's own file" in refused.stderr, refused.stderr
    assert lab.run(ip, f"cat {rootfs}/etc/registry.yml").stdout == V08_SETTINGS
    assert lab.run(ip, f"test -e {rootfs}/etc/other.yml", check=False).returncode == 1
    assert staging_dirs_under(lab, ip, rootfs) == []
    lab.run(ip, "rm -rf /tmp/write-rootfs-v08")


def staging_dirs_under(lab, ip, rootfs) -> list[str]:
    return lab.run(ip, f"find {rootfs} -maxdepth 1 -name '.sealer-registry.*'").stdout.split()
