"""Walking an exception's chain: what `tracking` and `tuning` look through to tell an unreachable
server from any other error (MLflow and Optuna wrap the error they meet, or raise another while
handling it)."""
from __future__ import annotations

from collections.abc import Iterator


def chained(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then every exception it was raised from (__cause__) or while handling
    (__context__), each once (a chain may loop back), depth first."""
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__context__, e.__cause__]
