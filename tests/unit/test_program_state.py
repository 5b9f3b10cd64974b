"""program_state: the engine gets the call site of each resource, not the whole Python stack."""

from pulumi.runtime import resource as sdk_resource

import program_state


def declare_here():
    return Resource().trace  # one line declares both: the same call site


class Resource:  # the SDK counts __init__ frames to find where our code begins
    def __init__(self):
        self.trace = Inner().trace


class Inner:
    def __init__(self):
        self.trace = Innermost().trace


class Innermost:
    def __init__(self):
        self.trace = sdk_resource._get_stack_trace()


def test_only_the_call_site_is_kept_and_it_is_ours(monkeypatch):
    # The SDK's own capture, also when another test's program run wrapped it already; restored after.
    original = getattr(sdk_resource._get_stack_trace, "wrapped", sdk_resource._get_stack_trace)
    monkeypatch.setattr(sdk_resource, "_get_stack_trace", original)
    full = declare_here()
    assert len(full.frames) > 3  # what the SDK sends unwrapped: the whole stack
    program_state.keep_call_site_only()
    program_state.keep_call_site_only()  # idempotent: not wrapped twice
    kept = declare_here()
    assert len(kept.frames) == 1
    assert kept.frames[0].pc == full.frames[0].pc  # the same call site: sourcePosition unchanged
    assert "test_program_state.py" in kept.frames[0].pc.uri
