"""The one error type of the config package.

A `ConfigError` carries every problem found, each as a dotted field path and a message that
quotes the offending value (secrets are shown as ``<secret>``), so a user fixes a stack file in
one pass instead of one error per run.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple


class Problem(NamedTuple):
    path: str
    """Dotted field path with ``[i]`` list indexes, e.g. ``cluster.masters[1]``; "" = the file."""
    message: str

    def line(self) -> str:
        if not self.path:
            return f"error: {self.message}"
        return f"error: {self.path}: {self.message}"


class ConfigError(ValueError):
    """Invalid stack configuration; `problems` lists all of them, in discovery order."""

    def __init__(self, problems: Iterable[tuple[str, str]], source: str | None = None):
        self.problems: list[Problem] = [Problem(*p) for p in problems]
        self.source = source
        super().__init__(self.__str__())

    def lines(self) -> list[str]:
        """One ``error: <path>: <message>`` line per problem."""
        return [p.line() for p in self.problems]

    def paths(self) -> list[str]:
        return [p.path for p in self.problems]

    def __str__(self) -> str:
        head = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        return f"{head}{count} problem{'s' if count != 1 else ''}\n" + "\n".join(self.lines())
