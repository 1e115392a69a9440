"""The run root is a boundary: no path from the spec, the state or a saved plan leads outside it.

One place, shared by the spec loader (words the problem with the file and line), the agent (which
resolves the paths on the machine, where the symlinks are) and the providers (machine folders,
labels used as names). Standard library plus :mod:`runform.errors` only.

- :func:`problem` says what is wrong with a relative path as written (absolute, ``..``, control
  characters, runform's own ``.runform/``), or None.
- :func:`resolve_inside` maps a relative path onto a root on disk, following the symlinks that
  already exist one component at a time, and refuses it when one of them leads outside the root
  (or into ``.runform/``).
- :func:`check_name` is for a name used as one path component (a label, a stage name).
"""

from __future__ import annotations

import os
import posixpath
import re

from runform.errors import RunformError

META = ".runform"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# a label or a resource name used as a folder name: one component, no dots-only name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class OutsideRootError(RunformError):
    """A path from the spec, the state or a plan would leave the run root (or enter ``.runform/``)."""


def problem(rel: object, *, allow_meta: bool = False) -> str | None:
    """What is wrong with ``rel`` as a path relative to the run root, in words; None if nothing."""
    if not isinstance(rel, str) or not rel:
        return "it is empty"
    if _CONTROL.search(rel):
        return "it contains a control character (a NUL byte, a newline, ...)"
    if rel.startswith("/"):
        return "it is an absolute path"
    parts = rel.split("/")
    if ".." in parts:
        return "it climbs out with '..'"
    norm = posixpath.normpath(rel)
    if not allow_meta and (norm == META or norm.startswith(META + "/")):
        return f"{META}/ is runform's own folder (state, secrets)"
    return None


def check_relative(rel: object, *, what: str, allow_meta: bool = False) -> str:
    """``rel`` normalised (``a/./b/`` -> ``a/b``); :class:`OutsideRootError` when it is unsafe."""
    why = problem(rel, allow_meta=allow_meta)
    if why is not None:
        raise OutsideRootError(f"{what} {rel!r} is refused: {why}",
                               hint="use a path relative to the run root: no leading '/', no '..', "
                               f"not under {META}/")
    return posixpath.normpath(str(rel))


def within(path: str, root: str) -> bool:
    """Whether the absolute ``path`` is ``root`` or below it (both already resolved)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolve_inside(root: str, rel: str, *, what: str, follow_last: bool = True,
                   allow_meta: bool = False) -> str:
    """The absolute path of ``rel`` under ``root``, with every existing symlink on the way resolved.

    A symlink that leads outside the root (or into ``.runform/``) is refused, so writing through
    the returned path never lands elsewhere. With ``follow_last=False`` the last component is not
    followed (a link about to be replaced). Components that do not exist yet are appended as they
    are."""
    norm = check_relative(rel, what=what, allow_meta=allow_meta)
    real_root = os.path.realpath(root)
    meta = os.path.join(real_root, META)
    if norm == ".":
        return real_root
    cur = real_root
    parts = norm.split("/")
    for i, part in enumerate(parts):
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt) and (follow_last or i < len(parts) - 1):
            target = os.path.realpath(nxt)
            if not within(target, real_root):
                raise OutsideRootError(
                    f"{what} {rel!r} is refused: {'/'.join(parts[:i + 1])} is a symlink that leads "
                    "outside the run root",
                    hint="point it at a path inside the run root, or remove that symlink")
            if not allow_meta and within(target, meta):
                raise OutsideRootError(
                    f"{what} {rel!r} is refused: {'/'.join(parts[:i + 1])} is a symlink into {META}/",
                    hint=f"{META}/ holds runform's state and secrets; use another path")
            cur = target
        else:
            cur = nxt
    return cur


def check_name(name: object, *, what: str) -> str:
    """``name`` when it is safe as one path component (a machine label, a folder name)."""
    if not isinstance(name, str) or not _NAME.match(name):
        shown = repr(name)[:80]
        raise OutsideRootError(
            f"{what} {shown} is not a valid name (letters, digits, '.', '_' and '-', starting with a "
            "letter or digit; no '/')",
            hint="the state was edited or damaged: restore it from state.json.bak, or correct that "
            "field by hand")
    return name
