"""The project's errors: ConfigError (bad user input, exit 2), and walking an exception's chain,
which `tracking` and `tuning` look through to tell an unreachable server from any other error
(MLflow and Optuna wrap the error they meet, or raise another while handling it)."""
from __future__ import annotations

from collections.abc import Iterator


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the bad value and the valid choices.

    The CLI prints it and exits with status 2 before any work starts.
    """


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
