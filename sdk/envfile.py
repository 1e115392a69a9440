"""A safe ``.env`` parser: ``KEY=VALUE``, quotes, comments, ``export``; no shell evaluation.

Stdlib only: the agent's job supervisor imports it on the machine.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(ValueError):
    """A malformed line; carries the 1-based line number."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def parse_env(text: str) -> dict[str, str]:
    """Parse ``.env`` text into a dict. ``$VAR`` and backticks are kept literally."""
    out: dict[str, str] = {}
    text = text[1:] if text.startswith("\ufeff") else text  # a byte-order mark (Windows editors)
    if "\0" in text:
        raise EnvFileError("the file contains a NUL byte (an environment variable cannot carry one)",
                           text[: text.index("\0")].count("\n") + 1)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        lineno = i + 1
        raw = lines[i]
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export ") or stripped.startswith("export\t"):
            stripped = stripped[len("export"):].lstrip()
        if "=" not in stripped:
            raise EnvFileError(
                "expected KEY=VALUE, but the line has no '=' (not shown: it may be part of a secret; "
                "a value that spans lines must be quoted)",
                lineno,
            )
        key, _, rest = stripped.partition("=")
        key = key.strip()
        if not _KEY.match(key):
            raise EnvFileError(
                f"invalid variable name: {_shape(key)} (letters, digits and _; not starting with a digit)",
                lineno,
            )
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            body = rest[1:]
            # a quoted value may span lines
            while _closing(body, quote) < 0 and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            end = _closing(body, quote)
            if end < 0:
                raise EnvFileError(f"unterminated {quote} quote", lineno)
            value = body[:end]
            tail = body[end + 1 :].strip()
            if tail and not tail.startswith("#"):
                raise EnvFileError("unexpected text after the closing quote", lineno)
            if quote == '"':
                value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), value)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        out[key] = value
    return out


def _closing(body: str, quote: str) -> int:
    j = 0
    while j < len(body):
        c = body[j]
        if c == "\\" and quote == '"':
            j += 2
            continue
        if c == quote:
            return j
        j += 1
    return -1


def _shape(key: str) -> str:
    """What is wrong with a variable name, without echoing it: a bad "name" is often a piece of a
    multi-line secret that was not quoted."""
    if not key:
        return "it is empty"
    if key[0].isdigit():
        return "it starts with a digit"
    bad = next((c for c in key if not (c == "_" or (c.isascii() and c.isalnum()))), "?")
    return "it contains a space" if bad.isspace() else f"it contains {bad!r}"
