"""One way to replace a file's content: :func:`atomic_write` (a temporary file beside it,
written, fsynced, renamed over it). A reader sees the old content or the new, never half of
either; a failure leaves the old file and no temporary one.

Standard library only: the agent on the machine uses it too. (The agent's two stand-alone
scripts, ``supervise.py`` and ``installer.py``, import nothing of runform and keep their own.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TMP_MARK = ".runform-tmp-"  # in every temporary name: a fetch record and a walk skip such files


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644,
                 parents: bool = True) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), with permissions ``mode``;
    ``parents``: create the missing folders above it first."""
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + TMP_MARK)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
