"""The project's errors: ConfigError (bad user input, exit 2) and the texts that name a bad value
with its close matches and the valid choices; walking an exception's chain,
which `tracking` and `tuning` look through to tell an unreachable server from any other error
(MLflow and Optuna wrap the error they meet, or raise another while handling it)."""
from __future__ import annotations

import difflib
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


def did_you_mean(value: str, choices, n: int = 3) -> str:
    """' (did you mean: a, b?)' for close matches of `value` in `choices`, else ''. Case is
    ignored in matching (`SVHN`, `Digits` find svhn, digits), kept in what is suggested."""
    folded: dict[str, str] = {}
    for choice in choices:
        folded.setdefault(str(choice).lower(), str(choice))
    close = [folded[c] for c in difflib.get_close_matches(str(value).lower(), list(folded), n=n, cutoff=0.6)]
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def listed(names, show: int = 12) -> str:
    """'a, b, c' for the first `show` names, then ', ... (N in all)' where there are more."""
    names = list(names)
    return ", ".join(names[:show]) + (f", ... ({len(names)} in all)" if len(names) > show else "")


def unknown(kind: str, value: str, choices, show: int = 12) -> ConfigError:
    """ConfigError for an unknown name: suggests close matches and lists the valid choices."""
    choices = list(choices)
    return ConfigError(f"unknown {kind} {value!r}{did_you_mean(value, choices)}; valid: {listed(choices, show)}")


def first_line(e: BaseException, empty: str | None = None) -> str:
    """The first line of an exception's text (a one-line error quotes it), else `empty`, else
    the exception's type name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else (empty if empty is not None else type(e).__name__)
