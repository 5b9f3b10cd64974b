"""The test tree collects as one: `python3 -m pytest` from the project root gathers every tier."""

from __future__ import annotations

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique_across_tiers():
    """pytest's default import mode imports test modules by basename (the tiers have no
    __init__.py), so two tiers holding the same file name fail collection from the root."""
    names = collections.Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []
