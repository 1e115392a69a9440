"""The agent's ``read_media`` operation: an image a stage made, for the client's tracker."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from runform.rootpath import resolve_inside

MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
MEDIA_MAX_BYTES = 8 << 20


def read_media(req: dict[str, Any]) -> dict[str, Any]:
    """An image a stage named in its metrics file (``{"images": {"name": "reports/x.png"}}``):
    its bytes (base64) and sha256, for the client to hand to the tracker. Inside the run root, out
    of ``.runform/``, an image suffix and at most 8 MiB; anything else is refused with the reason."""
    import base64

    rel = str(req["path"])
    path = resolve_inside(req["root"], rel, what="image")
    if not rel.lower().endswith(MEDIA_SUFFIXES):
        return {"ok": False, "error": f"image {rel!r} is not a {'/'.join(MEDIA_SUFFIXES)} file",
                "hint": "name PNG, JPEG or GIF files under `images` in the metrics file"}
    try:
        size = os.stat(path).st_size
        if size > MEDIA_MAX_BYTES:
            return {"ok": False, "error": f"image {rel!r} is {size} bytes (at most {MEDIA_MAX_BYTES})",
                    "hint": "save the figure at a lower resolution"}
        with open(path, "rb") as f:
            data = f.read(MEDIA_MAX_BYTES + 1)
    except OSError as exc:
        return {"ok": False, "error": f"image {rel!r} cannot be read: {exc.strerror}",
                "hint": "write the image before the stage ends"}
    return {"data": base64.b64encode(data).decode(), "sha256": hashlib.sha256(data).hexdigest()}
