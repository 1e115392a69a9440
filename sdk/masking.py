"""How a secret may be spelled, and a byte-stream masker that catches it across chunk boundaries.

Standard library only: the job supervisor loads this file by path on the machine (it runs with
``python -S``), and :mod:`runform.redact` builds on it for everything on this side.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 4
# a base64 fragment shorter than this is too likely to occur by chance to be masked
_MIN_B64 = 8


def spellings(value: str) -> set[str]:
    """A secret as it may appear: raw, URL-quoted, JSON-escaped (ASCII and not), and base64
    encoded (standard and URL-safe alphabets, at each of the three byte alignments it can
    have inside a longer encoded text)."""
    out = {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1],
           json.dumps(value, ensure_ascii=False)[1:-1], quote(value, safe="/:")}
    raw = value.encode()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw)
        whole = len(enc) if k == 0 else 4 * ((k + len(raw)) // 3)  # characters of whole groups
        # characters that depend on the leading pad bytes: none, 2 or 3
        core = enc[{0: 0, 1: 2, 2: 3}[k]:whole]
        if k == 0:
            out.add(enc.decode())  # the value encoded on its own, with its padding
            core = enc[:4 * (len(raw) // 3)]
        if len(core) >= _MIN_B64:
            out.add(core.decode())
            out.add(core.decode().replace("+", "-").replace("/", "_"))
    return {s for s in out if len(s) >= MIN_LENGTH}


def pattern(values: Iterable[str]) -> re.Pattern[bytes] | None:
    """One regex for every spelling of ``values``, longest first (None when there is nothing)."""
    forms = sorted({f.encode() for v in values if len(v) >= MIN_LENGTH for f in spellings(v)},
                   key=lambda b: (-len(b), b))
    return re.compile(b"|".join(map(re.escape, forms))) if forms else None


class ByteMasker:
    """Masks a byte stream chunk by chunk. ``feed`` returns what is safe to emit now and holds
    back the tail that could be the start of a secret split across chunks; ``flush`` ends."""

    def __init__(self, compiled: re.Pattern[bytes] | None, longest: int) -> None:
        self._pattern = compiled
        self._keep = max(longest - 1, 0)
        self._pending = b""

    @classmethod
    def of(cls, values: Iterable[str]) -> ByteMasker:
        values = list(values)
        compiled = pattern(values)
        longest = max((len(f.encode()) for v in values if len(v) >= MIN_LENGTH for f in spellings(v)),
                      default=0)
        return cls(compiled, longest)

    def feed(self, chunk: bytes) -> bytes:
        if self._pattern is None:
            return chunk
        raw = self._pending + chunk
        # A match starting before `boundary` is final: the longest secret starting there fits in
        # `raw`. Anything from `boundary` on waits for the next chunk.
        boundary = len(raw) - self._keep
        out: list[bytes] = []
        pos = 0
        for m in self._pattern.finditer(raw):
            if m.start() >= boundary:
                break
            out += [raw[pos:m.start()], MASK.encode()]
            pos = m.end()
        cut = max(pos, boundary, 0)
        out.append(raw[pos:cut])
        self._pending = raw[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        if self._pattern is None:
            return data
        return self._pattern.sub(MASK.encode(), data)
