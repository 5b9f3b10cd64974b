"""lab/vip.py's spec: what ensure() accepts before it touches a node, and how it names a bad
value; the checker's nft table as reg-lvscare.sh renders it."""
from __future__ import annotations

import subprocess

import pytest

from lab import vip

GOOD = {"vip": vip.VIP, "port": 5000, "masters": ["198.18.0.11", "198.18.0.12"],
        "interval": 5, "timeout": 10}


def spec(**overrides):
    return vip._spec(**{**GOOD, **overrides})


def test_accepts_the_lab_vip_and_masters():
    s = spec()
    assert str(s.vip) == vip.VIP and vip.VIP.startswith("198.19.")
    assert [str(m) for m in s.masters] == GOOD["masters"]
    assert vip._argv(s)[2:] == ["care", vip.TABLE, vip.VIP, "5000", "5", "10",
                                "198.18.0.11", "198.18.0.12"]


def test_accepts_any_vip_inside_198_18_0_0_15():
    assert str(spec(vip="198.18.200.2").vip) == "198.18.200.2"


@pytest.mark.parametrize("field,value,shown", [
    ("vip", "10.103.97.2", "vip 10.103.97.2 is outside 198.18.0.0/15"),
    ("vip", "not-an-ip", "input_value='not-an-ip'"),
    ("port", 0, "input_value=0"),
    ("port", 70000, "input_value=70000"),
    ("masters", [], "input_value=[]"),
    ("masters", ["198.18.0.11", "198.18.0.11"],
     "masters lists an address twice: ['198.18.0.11', '198.18.0.11']"),
    ("masters", ["sea.hub"], "input_value='sea.hub'"),
    ("interval", 0, "input_value=0"),
    ("timeout", -1, "input_value=-1"),
])
def test_rejects_bad_values_naming_the_field_and_value(field, value, shown):
    with pytest.raises(ValueError) as e:
        spec(**{field: value})
    assert str(e.value).startswith("lab.vip.ensure: ")
    assert f"\n{field}" in str(e.value) and shown in str(e.value), str(e.value)


def render(*backends: str) -> str:
    done = subprocess.run(["bash", "-c", f'source <(sed "/^main \\"\\$@\\"$/d" {vip.SCRIPT}); '
                                         f'render t 198.19.0.2 5000 "$@"', "render", *backends],
                          capture_output=True, text=True, check=True)
    return done.stdout


def test_render_round_robins_over_the_healthy_backends_and_replaces_the_table_whole():
    text = render("198.18.0.11", "198.18.0.12")
    assert text.startswith("table ip t\ndelete table ip t\ntable ip t {\n")
    assert "elements = { 198.18.0.11, 198.18.0.12 }" in text
    assert ("ip daddr 198.19.0.2 tcp dport 5000 dnat to numgen inc mod 2 map "
            "{ 0 : 198.18.0.11, 1 : 198.18.0.12 }") in text
    assert "ip daddr 198.19.0.2 tcp dport 5000 reject with tcp reset" in text


def test_render_with_no_healthy_backend_has_no_dnat_and_refuses():
    text = render()
    assert "dnat" not in text and "elements" not in text
    assert "reject with tcp reset" in text
