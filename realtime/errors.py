"""Turning exceptions into the one-line messages users see."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (or its type name), at most ``limit`` characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
