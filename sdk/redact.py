"""Redaction of secret values in everything that leaves the process.

The core builds one :class:`Redactor` from the values of the secrets env file and passes
every string, byte chunk or JSON document that goes to a terminal, a log, the state, a
tracker or a remote command line through it::

    red = Redactor.from_env({"B2_APP_KEY": "K0051secret"})
    red("key=K0051secret")            # 'key=***'
    red.redact_json({"argv": ["--key", "K0051secret"]})

Rules: every value of at least :data:`MIN_LENGTH` characters is replaced by ``***``;
the longest values are matched first (so a secret that contains another one is masked
whole); the URL-quoted, JSON-escaped and base64 spellings of a value are masked too. Values
shorter than :data:`MIN_LENGTH` are skipped: masking ``1`` or ``yes`` would garble
output without protecting anything.

For output that arrives in chunks (a log being streamed), :meth:`Redactor.stream` holds
back just enough bytes that a secret split across two chunks is still caught.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from runform.masking import MASK, MIN_LENGTH, ByteMasker, spellings


def _spellings(value: str) -> set[str]:
    """A secret as it may appear: raw, URL-quoted, JSON-escaped, base64 (see :mod:`runform.masking`)."""
    return spellings(value)


@attrs.frozen
class Redactor:
    """Masks a fixed set of secret values. An empty redactor returns its input unchanged."""

    secrets: tuple[str, ...] = attrs.field(default=(), converter=lambda v: _normalise(v))
    _text: re.Pattern[str] | None = attrs.field(init=False, repr=False, eq=False)
    _bytes: re.Pattern[bytes] | None = attrs.field(init=False, repr=False, eq=False)
    _max: int = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        forms = sorted({s for v in self.secrets for s in _spellings(v)}, key=lambda s: (-len(s), s))
        text = re.compile("|".join(map(re.escape, forms))) if forms else None
        raw = sorted({f.encode() for f in forms}, key=lambda b: (-len(b), b))
        data = re.compile(b"|".join(map(re.escape, raw))) if raw else None
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_bytes", data)
        object.__setattr__(self, "_max", max((len(f) for f in raw), default=0))

    def __repr__(self) -> str:  # never print the secrets themselves
        return f"Redactor(<{len(self.secrets)} secrets>)"

    __str__ = __repr__

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        """Every value of an env mapping (the parsed secrets env file) is a secret."""
        return cls(tuple(str(v) for v in env.values() if v is not None))

    def extend(self, values: Iterable[str]) -> Redactor:
        """A redactor that also masks ``values``."""
        return Redactor(self.secrets + tuple(values))

    @property
    def max_length(self) -> int:
        """Length in bytes of the longest masked spelling (0 when there is none)."""
        return self._max

    # ------------------------------------------------------------------ redaction
    def redact_text(self, value: str) -> str:
        """Mask secrets in a string."""
        if self._text is None or not value:
            return value
        return self._text.sub(MASK, value)

    def redact_bytes(self, value: bytes) -> bytes:
        """Mask secrets in bytes (secrets are matched in their UTF-8 encoding)."""
        if self._bytes is None or not value:
            return value
        return self._bytes.sub(MASK.encode(), value)

    def redact_json(self, value: Any) -> Any:
        """Mask secrets in a JSON-like document: keys and string values, at any depth.

        Numbers, booleans and None are returned as they are; tuples become lists.
        """
        if self._text is None:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, bytes | bytearray):
            return self.redact_bytes(bytes(value))
        if isinstance(value, Mapping):
            return {self.redact_text(str(k)) if isinstance(k, str) else k: self.redact_json(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_json(v) for v in value]
        return value

    def __call__(self, value: Any) -> Any:
        """Dispatch on type: str, bytes or a JSON-like document."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, bytes | bytearray):
            return self.redact_bytes(bytes(value))
        return self.redact_json(value)

    def stream(self) -> StreamRedactor:
        """A stateful redactor for output that arrives in chunks."""
        return StreamRedactor(self)


class StreamRedactor(ByteMasker):
    """Redacts a byte stream chunk by chunk, catching secrets split across chunks (the
    supervisor's :class:`runform.masking.ByteMasker` with this redactor's spellings).

    ``feed`` returns what can safely be emitted now; ``flush`` returns the rest at the end.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__(redactor._bytes, redactor.max_length)


def _normalise(values: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    keep = {str(v) for v in values if v is not None and len(str(v)) >= MIN_LENGTH}
    return tuple(sorted(keep, key=lambda s: (-len(s), s)))
