"""What the stand-in's handlers answer: ``(status, body)`` or ``(status, body, headers)``,
``body`` a dict, a plain string, or :data:`DROP` (close the connection without answering)."""

from __future__ import annotations

from typing import Any

DROP = object()
Reply = tuple[Any, ...]  # (status, body) or (status, body, headers)


def err(status: int, error: str, msg: str, **extra: Any) -> Reply:
    """Vast's error body: ``{"success": false, "error": ..., "msg": ...}``."""
    return status, {"success": False, "error": error, "msg": msg, **extra}
