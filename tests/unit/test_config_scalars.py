"""Values that would break a shell command, ssh, rsync, curl, htpasswd, DNS or /etc/hosts later are
refused by the config (config/scalars.py), naming the field and showing the value; every rule has
accepting and rejecting cases. The base is `render()` of test_config, valid as it stands.
"""

from __future__ import annotations

import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from test_config import CLUSTER_IMG, DELETE, IMG, PASSWORD, PKI, assert_rejected, load, problems, render


def openssh_public(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


ED25519 = openssh_public(ed25519.Ed25519PrivateKey.generate())
RSA = openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=1024))


# -- 1. a final newline (or any stray character) fails a whole-value match -----------------------


@pytest.mark.parametrize("path, good", [
    ("registry.domain", "sea.hub"),
    ("cluster.name", "my-cluster"),
    ("kubernetes.cluster_identifier", "my-cluster"),
    ("apps.cluster_image_id", CLUSTER_IMG),
    ("apps.history.applications.0.image_id", IMG),
    ("master0", "198.18.0.11"),
    ("cluster.ssh.user", "root"),
    ("registry.username", "admin"),
    ("cluster.data_root", "/var/lib/sealer/data"),
])
def test_a_trailing_newline_is_refused(path, good):
    """`$` matches before a final newline; every pattern is a fullmatch, so 'x\\n' is not 'x'."""
    key = path.replace(".", "__")
    assert load(render(**{key: good})) is not None
    assert_rejected(render(**{key: good + "\n"}), path.replace(".applications.0.", ".applications[0]."), repr(good + "\n"))


def test_bcrypt_cost_takes_ascii_digits_only():
    """`\\d` takes any Unicode digit; the htpasswd hash's cost field is ASCII only."""
    line = PKI.htpasswd.strip()
    user, digest = line.split(":", 1)
    arabic = digest[:4] + "\u0661\u0660" + digest[6:]  # "$2b$" + Arabic-Indic "10" + "$..."
    assert load(render(registry__htpasswd=line)).registry.htpasswd is not None
    assert_rejected(render(registry__htpasswd=f"{user}:{arabic}"), "registry.htpasswd", "is not 'user:<bcrypt hash>'")


# -- 2. user names: POSIX portable names only -----------------------------------------------------

USER_FIELDS = [("cluster.ssh.user", 32), ("cluster.ssh.jump_host.user", 32), ("registry.username", 64),
               ("apps.image_store.username", 64)]


def _user_values(path: str, user: str) -> dict:
    if path == "cluster.ssh.jump_host.user":
        return render(cluster__ssh__jump_host={"host": "bastion.example.com", "user": user})
    if path == "apps.image_store.username":  # the store's login is USER:PASSWORD in skopeo's auth file
        return render(apps__image_store__username=user, apps__image_store__password="pull-s3cret")
    return render(**{path.replace(".", "__"): user})


def _user_of(config, path: str) -> str:
    node = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("path, longest", USER_FIELDS)
@pytest.mark.parametrize("user", ["root", "admin", "deploy.user", "_svc", "ci-bot_2", "Admin"])
def test_portable_user_names_are_accepted(path, longest, user):
    """Letters, digits, '.', '_' and '-' (not first) pass unchanged."""
    assert _user_of(load(_user_values(path, user)), path) == user
    assert _user_of(load(_user_values(path, "u" * longest)), path) == "u" * longest


@pytest.mark.parametrize("path, longest", USER_FIELDS)
@pytest.mark.parametrize("user", [
    "-oProxyCommand=touch /tmp/x", "-root", "ro ot", "root\n", "root\t", "ci@corp", "ad:min",
    "o'brien", 'a"b', "a;id", "$(id)", "a`id`", "a\\b", "a*", "ädmin", "", "a/b",
])
def test_user_names_with_metacharacters_are_refused(path, longest, user):
    """A leading '-' becomes an ssh option, '@' and ':' split USER@HOST and htpasswd's USER:HASH,
    quotes and whitespace end a curl config string or a shell word: refused, with the rule."""
    lines = assert_rejected(_user_values(path, user), path, f"{user!r} is not a valid user name")
    line = next(line for line in lines if line.startswith(f"error: {path}: "))
    assert f"letters, digits, '.', '_' and '-', 1-{longest} characters, not starting with '-'" in line


@pytest.mark.parametrize("path, longest", USER_FIELDS)
def test_overlong_user_names_are_refused(path, longest):
    """Linux user names stop at 32 characters; a registry user name at 64."""
    assert_rejected(_user_values(path, "u" * (longest + 1)), path, "is not a valid user name")


def test_user_name_message_says_why():
    """The message names the rule and what the value is used for."""
    lines = problems(render(cluster__ssh__user="-oProxyCommand=x"))
    assert ("error: cluster.ssh.user: '-oProxyCommand=x' is not a valid user name (letters, digits, '.', "
            "'_' and '-', 1-32 characters, not starting with '-': ssh and rsync take it as USER@HOST)") in lines


# -- 3. the registry domain is a name of its own ----------------------------------------------------


@pytest.mark.parametrize("domain", ["1234", "0x7f.1", "127.1", "sea.123", "0X7F.0.0.1", "10.0.0.0x1", "a.0x"])
def test_domain_read_as_an_address_is_refused(domain):
    """curl and inet_aton take a name whose last label is a number as an IPv4 address."""
    assert_rejected(render(registry__domain=domain), "registry.domain", f"{domain!r} reads as an IP address")


@pytest.mark.parametrize("domain", ["localhost", "LocalHost", "registry.localhost", "localhost.localdomain",
                                    "ip6-localhost", "localhost6"])
def test_domain_that_names_the_local_machine_is_refused(domain):
    """Every host already maps these names to itself."""
    assert_rejected(render(registry__domain=domain), "registry.domain", "already names the local machine on every host")


@pytest.mark.parametrize("domain, stored", [("Sea.Hub", "sea.hub"), ("hub0", "hub0"), ("123.sea.hub", "123.sea.hub"),
                                            ("a.0xg", "a.0xg"), ("localhost-registry", "localhost-registry"),
                                            ("localhost.example.com", "localhost.example.com")])
def test_domain_with_a_name_as_last_label_is_accepted_and_lowercased(domain, stored):
    """Numeric labels other than the last are fine; the stored name is lowercase."""
    assert load(render(registry__domain=domain)).registry.domain == stored


# -- 4. data_root: a path every script can take as one word ---------------------------------------


@pytest.mark.parametrize("root", ["/var/lib/sealer/data", "/srv/sealer_data-1.0", "/data"])
def test_data_root_of_safe_characters_is_accepted(root):
    assert load(render(cluster__data_root=root)).cluster.data_root == root


@pytest.mark.parametrize("root", ["/var/lib/sealer data", "/var/lib/sealer\tdata", "/srv/a:b", "/srv/$HOME",
                                  "/srv/it's", "/srv/dätä", "/srv/a;b", "/srv/*"])
def test_data_root_with_other_characters_is_refused(root):
    """sealer's init-registry.sh splits VOLUME on whitespace; rsync reads ':' as host:path."""
    lines = assert_rejected(render(cluster__data_root=root), "cluster.data_root", repr(root))
    assert any("init-registry.sh splits the registry path on whitespace" in line for line in lines)


# -- 5. pinned host keys: one known_hosts line ------------------------------------------------------


@pytest.mark.parametrize("key", [ED25519, RSA, ED25519 + " root@srl-11", "  " + ED25519 + "  "])
def test_host_key_line_is_accepted(key):
    """'<type> <base64>[ comment]'; surrounding spaces are dropped."""
    assert load(render(cluster__ssh__host_keys={"198.18.0.11": key})).cluster.ssh.host_keys["198.18.0.11"] == key.strip()


@pytest.mark.parametrize("key, fragment", [
    (ED25519 + "\n", "holds a line break or control character"),
    (ED25519 + "\n198.18.0.99 " + RSA, "holds a line break or control character"),
    (ED25519 + " evil\x1b[2Jcomment", "holds a line break or control character"),
    ("ssh-rsa " + ED25519.split()[1], "its base64 holds a ssh-ed25519 key, not ssh-rsa"),
    ("ssh-ed25519 AAAA!!!!", "is not a public host key"),
    ("ssh-ed25519 QUJD", "its base64 holds a malformed key"),
    ("rsa AAAAB3NzaC1yc2E=", "is not a public host key"),
])
def test_host_key_that_is_not_one_line_of_a_key_is_refused(key, fragment):
    """A newline would make a second known_hosts line; a mismatched type is a paste error."""
    assert_rejected(render(cluster__ssh__host_keys={"198.18.0.11": key}), "cluster.ssh.host_keys[198.18.0.11]", fragment)


# -- 6. addresses that are no host's: loopback, unspecified, broadcast, multicast, ... --------------

NOT_HOSTS = [
    ("127.0.0.1", "a loopback address"), ("127.1.2.3", "a loopback address"),
    ("0.0.0.0", "an unspecified address"), ("0.1.2.3", "an unspecified address"),
    ("255.255.255.255", "the broadcast address"), ("224.0.0.1", "a multicast address"),
    ("240.0.0.1", "a reserved address"), ("169.254.169.254", "a link-local address"),
]


@pytest.mark.parametrize("ip, what", NOT_HOSTS)
def test_address_that_is_no_hosts_is_refused_everywhere(ip, what):
    """Each list that takes a host refuses it, with the kind of address."""
    values = render(master0=ip, cluster__nodes__1=ip, down_hosts=[ip],
                    registry__local_registry__deploy_hosts=["198.18.0.11", ip],
                    cluster__ssh__host_keys={ip: ED25519}, cluster__ssh__jump_host={"host": ip})
    lines = problems(values)
    for path in ("master0", "cluster.nodes[1]", "down_hosts[0]", "registry.local_registry.deploy_hosts[1]",
                 f"cluster.ssh.host_keys[{ip}]", "cluster.ssh.jump_host.host"):
        assert f"error: {path}: {ip!r} is {what}" in "\n".join(lines), (path, lines)


@pytest.mark.parametrize("ip", ["10.0.0.1", "192.168.1.10", "172.16.0.5", "198.19.255.30", "100.64.0.1", "8.8.8.8"])
def test_unicast_addresses_are_accepted(ip):
    """Private, shared and public unicast addresses are hosts'."""
    config = load(render(cluster__nodes__1=ip, cluster__ssh__jump_host={"host": ip}))
    assert config.cluster.nodes[1] == ip and config.cluster.ssh.jump_host.host == ip


@pytest.mark.parametrize("host, fragment", [("localhost", "already names the local machine"),
                                            ("127.1", "reads as an IP address"),
                                            ("bastion\n", "neither an IP address nor a valid DNS name")])
def test_jump_host_name_that_is_no_remote_host_is_refused(host, fragment):
    assert_rejected(render(cluster__ssh__jump_host={"host": host}), "cluster.ssh.jump_host.host", fragment)


# -- 8. free text and local paths: no control characters -------------------------------------------


@pytest.mark.parametrize("path", [
    "kubernetes.context", "apps.history.applications.0.version", "apps.history.type",
    "cluster.ssh.private_key_path", "kubernetes.kubeconfig_path", "apps.image_store.ca_file",
])
@pytest.mark.parametrize("bad", ["x\n", "x\ny", "x\x00", "x\x1b[0m", "x\r"])
def test_text_with_control_characters_is_refused(path, bad):
    """A line break or escape would corrupt the file or command line the value ends up in."""
    shown = path.replace(".applications.0.", ".applications[0].")
    assert_rejected(render(**{path.replace(".", "__"): bad}), shown, "holds a line break or control character")


@pytest.mark.parametrize("path, good", [
    ("kubernetes.context", "arn:aws:eks:eu-west-1:1:cluster/my cluster"),
    ("apps.history.applications.0.version", "v1.2.3+build 7"),
    ("apps.history.type", "boot"),
    ("cluster.ssh.private_key_path", "~/keys/id ed25519"),
    ("apps.image_store.ca_file", "~/certs/store ca.pem"),
])
def test_printable_text_is_accepted(path, good):
    assert load(render(**{path.replace(".", "__"): good})) is not None


def test_history_file_with_a_line_break_is_refused():
    values = render(apps__history=DELETE, apps__history_file="/tmp/application.json\n")
    assert_rejected(values, "apps.history_file", "holds a line break or control character")


@pytest.mark.parametrize("name", ["app 0", "../etc", "a/b", "app\n", ".", ".."])
def test_application_name_that_is_not_one_word_is_refused(name):
    values = render(apps__history__applications__0__name=name, apps__history__launch__app_names=["app1"])
    assert_rejected(values, "apps.history.applications[0].name", "is not a valid application name")


@pytest.mark.parametrize("name", ["app0", "my-app_1.0", "Calico", "app@v1"])
def test_application_name_of_one_word_is_accepted(name):
    values = render(apps__history__applications__0__name=name, apps__history__launch__app_names=[name, "app1"])
    assert load(values).history.applications[0].name == name


def test_launch_cmd_stays_free_text():
    """launch_cmd is shell code by design (sealer runs it) and only travels inside JSON."""
    cmd = "helm install app0 app0 \\\n  --set a=b && kubectl get po"
    assert load(render(apps__history__applications__0__launch_cmd=cmd)).history.applications[0].launch_cmd == cmd


@pytest.mark.parametrize("password, fragment", [
    (PASSWORD + "\nsecond", "<secret> holds a line break or control character"),
    ("p" * 73, "<secret> is 73 bytes in UTF-8; htpasswd's bcrypt uses at most 72"),
])
def test_password_that_cannot_travel_as_one_line_is_refused_without_showing_it(password, fragment):
    """verify-registry.sh reads the password as one line; bcrypt stops at 72 bytes."""
    lines = assert_rejected(render(registry__password=password), "registry.password", fragment)
    assert all(password not in line and "second" not in line for line in lines)


def test_password_of_72_bytes_is_accepted():
    password = "p" * 72
    htpasswd = "admin:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = load(render(registry__password=password, registry__htpasswd=htpasswd))
    assert config.registry.password.get_secret_value() == password

