"""Fault injection rules and the request log of the fake Hub server.

Tests arm rules (``fail``, ``slow``, ``drop``, ``abort_commit``, ``lose_commit_answer``) that fire on the next N
matching requests, then inspect the request log to check what the client did (a retry happened, only some files were
fetched, ...).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

FAULT_KINDS = ("fail", "slow", "drop", "abort_commit", "lose_commit_answer")


@dataclass
class FaultRule:
    """One armed fault.

    ``count`` is how many more matching requests it fires on (``None``: until cleared). A request matches when its
    method equals ``method`` (if set), its decoded path starts with ``path_prefix`` (if set) and contains
    ``path_contains`` (if set).
    """

    kind: str
    count: int | None = 1
    method: str | None = None
    path_prefix: str | None = None
    path_contains: str | None = None
    status: int = 500  # "fail": status to answer with
    seconds: float = 0.0  # "slow": delay before answering
    after_bytes: int | None = None  # "drop": body bytes sent before closing (None: half of the body)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {self.kind!r}, expected one of {FAULT_KINDS}")

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.method is None or self.method.upper() == method)
            and (self.path_prefix is None or path.startswith(self.path_prefix))
            and (self.path_contains is None or self.path_contains in path)
        )


class Faults:
    """Thread-safe set of armed fault rules."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, kind: str, method: str, path: str) -> FaultRule | None:
        """Consume one firing of the first armed ``kind`` rule matching the request, if any."""
        with self._lock:
            for rule in self._rules:
                if rule.kind == kind and rule.matches(method, path):
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def pending(self) -> list[FaultRule]:
        """Rules that have not fired their full count yet (e.g. to assert that a fault was consumed)."""
        with self._lock:
            return list(self._rules)


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered (or deliberately did not answer).

    ``path`` is URL-decoded and has no query string; ``status`` is 0 when the connection was dropped before any
    response; ``fault`` names the fault that fired on this request, if any.
    """

    method: str
    path: str
    query: str = ""
    status: int = 0
    range: str | None = None
    fault: str | None = None
    authenticated: bool = False


@dataclass
class RequestLog:
    """Append-only, thread-safe log of :class:`RequestRecord`."""

    _records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
