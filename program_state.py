"""What the program sends the engine about itself for each resource, kept small.

The Python SDK (pulumi 3.272.0, pulumi/runtime/resource.py ``_get_stack_trace``) sends with every
resource registration the whole Python call stack, and the engine stores it in the stack's state
(``stackTrace``): about 30 frames, 2.3 KB per resource here, most of them the SDK's and the
language host's own. With one step per cluster host that is 2.3 KB per host of state that every
checkpoint rewrites (issue 24: a 3 + 500 cluster's state goal is 2 KB per host in all). Only the
frame of our code that declared the resource is kept: ``sourcePosition`` (derived from that
frame) is unchanged, so `pulumi stack export` still says which line declared each step.
"""

from __future__ import annotations

from pulumi.runtime import resource as _sdk_resource

KEPT_FRAMES = 1


def keep_call_site_only() -> None:
    """Wrap the SDK's stack capture so that only the call site is sent. Idempotent; fails loudly
    when the SDK no longer has the function (a pinned-version change to look at)."""
    capture = _sdk_resource._get_stack_trace
    if getattr(capture, "call_site_only", False):
        return

    def call_site_only():
        trace = capture()
        del trace.frames[KEPT_FRAMES:]
        return trace

    call_site_only.call_site_only = True  # type: ignore[attr-defined]
    call_site_only.wrapped = capture  # type: ignore[attr-defined]
    _sdk_resource._get_stack_trace = call_site_only
