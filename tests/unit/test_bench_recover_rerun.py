"""The bench's `cli recover` at scale (bench/run.py Run.cli_recover): a refusal by the check
after the `up` is followed by the rerun the command prints, as an operator does; the figures then
add both attempts' seconds, and any other failure stops the phase."""

from __future__ import annotations

import pytest

from bench.run import BenchError, Run


class Peak:
    def __init__(self, mb: float):
        self.mb = mb


def bench_with(docs: list[dict]) -> tuple[Run, list]:
    bench = Run.__new__(Run)
    bench.results, calls = {}, []

    def once(stack, m, new, check=True, key=None):
        calls.append(key)
        bench.cli_peak, bench.cli_load = Peak(100.0 * len(calls)), 1.0
        return docs.pop(0)

    bench.cli_recover_once = once
    bench.record = lambda key, value, load=None: bench.results.__setitem__(key, value)
    return bench, calls


SECONDS = {"preflight": 1.0, "preview": 2.0, "up": 10.0, "verify": 3.0}
HEALTHY = {"exit_code": 0, "verified": {"healthy": True, "problems": []},
           "fence": {"healthy": True, "hosts": 500}, "seconds": {**SECONDS, "fence": 5.0}}
REFUSED = {"exit_code": 1, "error": "the status check after `up` found 3 problems (above); a rerun is safe",
           "verified": {"healthy": False, "problems": ["a", "b", "c"]}, "fence": None,
           "seconds": dict(SECONDS)}


def test_a_refused_check_is_rerun_once_and_both_attempts_count():
    bench, calls = bench_with([dict(REFUSED), dict(HEALTHY)])
    doc = bench.cli_recover(None, 500, "198.18.6.12")
    assert calls == [None, "500_rerun"]
    assert bench.results["recover_500_attempts"] == 2
    assert doc["seconds"] == {"preflight": 2.0, "preview": 4.0, "up": 20.0, "verify": 6.0, "fence": 5.0}
    assert bench.cli_peak.mb == 200.0  # the larger of the two runs' peaks


def test_a_first_attempt_that_verifies_is_not_rerun():
    bench, calls = bench_with([dict(HEALTHY)])
    assert bench.cli_recover(None, 12, "198.18.6.12")["seconds"]["up"] == 10.0
    assert calls == [None] and bench.results["recover_12_attempts"] == 1


@pytest.mark.parametrize("docs", [
    [{**REFUSED, "error": "pulumi up failed: step node-198.18.6.21 failed"}],  # not the check
    [dict(REFUSED), dict(REFUSED)],                                           # refused twice
])
def test_anything_else_stops_the_phase(docs):
    bench, _ = bench_with(docs)
    with pytest.raises(BenchError):
        bench.cli_recover(None, 500, "198.18.6.12")
