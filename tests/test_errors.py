"""mlproject.errors.chained: every exception of a chain once, loops included."""
from mlproject.errors import chained


def test_chained_walks_causes_and_contexts_once():
    root = OSError("Connection refused")
    try:
        try:
            raise root
        except OSError as e:
            raise ValueError("wrapped") from e
    except ValueError as e:
        try:
            raise RuntimeError("while handling") from None
        except RuntimeError as handling:
            top = handling
            wrapped = e
    assert [type(e) for e in chained(top)] == [RuntimeError, ValueError, OSError]
    assert list(chained(wrapped))[-1] is root
    root.__context__ = wrapped  # a loop: each still once
    assert len(list(chained(wrapped))) == 2
    assert list(chained(None)) == []
