"""Deploy, recover (master0 killed) and rejoin in `pre` mode on a fresh lab; see lifecycle.py."""

from tests.e2e.labstack import lab_env  # noqa: F401  (module-scoped lab of 3 masters + 2 nodes)
from tests.e2e.lifecycle import Lifecycle


class TestLifecyclePre(Lifecycle):
    mode = "pre"
