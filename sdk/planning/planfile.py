"""Saved plans: ``plan --out FILE`` writes JSON; ``apply FILE`` checks it per resource.

Terraform refuses a saved plan after any state write. runform refuses only when a resource the
plan touches changed since (its revision moved, or its local inputs changed), or the lineage
differs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runform.atomic import atomic_write
from runform.errors import RunformError, StateError
from runform.planning.model import FORMAT_VERSION, Plan
from runform.state.model import State

# How every saved plan begins (``save_plan`` writes ``Plan.to_json()``, whose first two keys are
# these), whatever the file is called: saved plans are recognised by content, never by name.
_PLAN_HEAD = re.compile(rb'\A\s*\{\s*"format_version"\s*:\s*"[^"]*"\s*,\s*"runform_version"\s*:')
_HEAD_BYTES = 256
MAX_PLAN_BYTES = 64 << 20


def check_plan_path(path: str | os.PathLike[str]) -> Path:
    """Say, before anything is planned or written, why ``path`` cannot take a saved plan."""
    p = Path(path)
    where = f"cannot save the plan to {path}"
    if p.is_dir():
        raise RunformError(f"{where}: it is a folder",
                           hint=f"name a file in it, e.g. --out {p / 'next.plan'}")
    parent = p.parent
    if not parent.exists():
        raise RunformError(f"{where}: folder {parent} does not exist",
                           hint=f"create it first (mkdir -p {parent}), or save the plan elsewhere, "
                           "e.g. --out next.plan")
    if not parent.is_dir():
        raise RunformError(f"{where}: {parent} is not a folder",
                           hint="save the plan in a folder, e.g. --out next.plan")
    if ".runform" in p.resolve().parts or ".runform" in p.parts:
        raise RunformError(f"{where}: it is inside .runform/, runform's own folder (state, journal, secrets)",
                           hint="save the plan beside the spec, e.g. --out next.plan")
    if (p.exists() or p.is_symlink()) and not (p.is_file() and not p.is_symlink() and is_saved_plan(p)):
        kind = ("an empty file" if p.is_file() and not p.is_symlink() and not p.stat().st_size
                else "a symlink" if p.is_symlink() else "not a saved plan")
        raise RunformError(f"{where}: {path} exists and is {kind} (it would be overwritten)",
                           hint="name a new file, e.g. --out next.plan, or remove that file first")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise RunformError(f"{where}: permission denied",
                           hint="save the plan where you can write, e.g. --out next.plan")
    return p


def save_plan(plan: Plan, path: Path) -> None:
    """Write the plan atomically (a temporary file beside it, then a rename); an error names the path."""
    path = Path(path)
    try:
        atomic_write(path, json.dumps(plan.to_json(), indent=1, default=str), parents=False)
    except OSError as exc:
        raise RunformError(f"cannot save the plan to {path}: {exc.strerror or exc}",
                           hint="save it in a folder that exists and that you can write, "
                           "e.g. --out next.plan") from None


def is_saved_plan(path: Path) -> bool:
    """Whether ``path`` holds a plan written by ``save_plan`` (judged by its first bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    return bool(_PLAN_HEAD.match(head))


def saved_plans_in(root: Path, exclude: Iterable[str] = ()) -> list[str]:
    """Relative paths of the saved plans in the code tree ``root`` (``exclude`` as for the tree)."""
    from runform.digests import walk

    return [rel for rel in walk(root, exclude) if is_saved_plan(root / rel)]


def load_plan(path: Path) -> Plan:
    try:
        if path.is_dir():
            raise StateError(f"{path}: is a folder, not a plan file", hint="pass the file `plan --out` wrote")
        if path.exists() and not path.is_file():
            raise StateError(f"{path}: not a regular file", hint="pass the file `plan --out` wrote")
        if path.exists() and path.stat().st_size > MAX_PLAN_BYTES:
            raise StateError(f"{path}: {path.stat().st_size} bytes is too large for a saved plan",
                             hint="pass the file `plan --out` wrote")
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise StateError(f"{path}: plan file not found", hint="create one with `runform plan --out FILE`") from None
    except RecursionError:
        raise StateError(f"{path}: not a runform plan file (JSON nested too deep)",
                         hint="re-create the plan with `runform plan --out FILE`") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read the plan file: {exc.strerror or exc}",
                         hint="check the file's permissions") from None
    except ValueError as exc:
        raise StateError(f"{path}:{getattr(exc, 'lineno', 1)}: not a runform plan file (invalid JSON)",
                         hint="create one with `runform plan --out FILE`") from None
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise StateError(f"{path}: not a runform plan file (no format_version)",
                         hint="create one with `runform plan --out FILE`")
    major = str(raw["format_version"]).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise StateError(f"{path}: format_version {raw['format_version']} is not supported "
                         f"(this runform reads {FORMAT_VERSION})", hint="re-create the plan with this runform")
    _check_changes(path, raw)
    try:
        return Plan.from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{path}: field {exc} is missing or malformed",
                         hint="re-create the plan with `runform plan --out FILE`") from None


def _check_changes(path: Path, raw: dict[str, Any]) -> None:
    """Name the entry of ``resource_changes`` that is malformed, before anything reads it."""
    from runform.planning.model import SYMBOLS

    hint = "re-create the plan with `runform plan --out FILE`"
    for key, kind, what in (("run", str, "a string"), ("lineage", str, "a string"),
                            ("spec_path", str, "a string"), ("variables", dict, "an object"),
                            ("new_state", dict, "an object"), ("targets", list, "a list"),
                            ("serial", int, "an integer")):
        if raw.get(key) is not None and not isinstance(raw[key], kind):
            raise StateError(f"{path}: field {key!r}: expected {what}, got {type(raw[key]).__name__}",
                             hint=hint)
    for key, value in (raw.get("variables") or {}).items():
        if not isinstance(value, (str, int, float, bool)):
            raise StateError(f"{path}: variables.{key}: expected a single value, got {type(value).__name__}",
                             hint=hint)
    if raw.get("new_state") is not None:
        from runform.state.model import FieldError, State

        try:
            State.from_json({"version": 1, "serial": 0, **raw["new_state"]})
        except (StateError, FieldError) as exc:
            raise StateError(f"{path}: new_state: {getattr(exc, 'message', exc)}", hint=hint) from None
    if "resource_changes" not in raw:
        raise StateError(f"{path}: field 'resource_changes' is missing", hint=hint)
    changes = raw["resource_changes"]
    if not isinstance(changes, list):
        raise StateError(f"{path}: resource_changes: expected a list, got {type(changes).__name__}", hint=hint)
    for i, a in enumerate(changes):
        where = f"resource_changes[{i}]"
        if not isinstance(a, dict):
            raise StateError(f"{path}: {where}: expected an object, got {type(a).__name__}", hint=hint)
        for key in ("address", "action", "reason"):
            if key not in a:
                raise StateError(f"{path}: {where}: field {key!r} is missing", hint=hint)
        if not isinstance(a["address"], str) or "." not in a["address"]:
            raise StateError(f"{path}: {where}.address: {a['address']!r} is not an address (KIND.NAME)",
                             hint=hint)
        kind, _, name = a["address"].partition(".")
        if not re.fullmatch(r"[a-z_]{1,32}", kind) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}(\[[0-9]{1,3}\])?", name):
            raise StateError(f"{path}: {where}.address: {a['address'][:80]!r} is not an address (KIND.NAME)",
                             hint=hint)
        if not isinstance(a.get("change", {}), dict) or not isinstance(a.get("change", {}).get("after", {}), dict):
            raise StateError(f"{path}: {where}.change: expected an object with an object `after`", hint=hint)
        if a["action"] not in SYMBOLS:
            raise StateError(f"{path}: {where}.action: unknown action {a['action']!r} "
                             f"(known: {', '.join(SYMBOLS)})", hint=hint)


def check_origin(plan: Plan, spec_run: str, spec_path: Path, plan_file: Path, explicit_spec: bool) -> None:
    """Refuse a saved plan made for another run, or (unless ``--spec`` names it) for a spec other
    than the one here: applying it would act on that other project."""
    if plan.run != spec_run:
        raise StateError(f"{plan_file}: this plan was made for run {plan.run!r}, not {spec_run!r}",
                         hint="apply it in the project it was made for, or make a plan here with "
                         "`runform plan --out FILE`")
    if explicit_spec:
        return
    here = (Path.cwd() / "runform.yaml").resolve()
    made_for = Path(plan.spec_path).resolve() if plan.spec_path else None
    if made_for is not None and made_for != here:
        raise StateError(f"{plan_file}: this plan was made for the spec {made_for}, not {here}",
                         hint=f"run apply in {made_for.parent}, or pass --spec {made_for} to apply it "
                         "to that spec from here")


def check_addresses(plan: Plan, known: Iterable[str], plan_file: Path) -> None:
    """Refuse a plan that names resources neither the spec nor the state has (an edited plan),
    before anything is planned or applied."""
    known = set(known)
    unknown = [a.address for a in plan.actions if a.address not in known]
    if unknown:
        raise StateError(f"{plan_file}: the plan names {', '.join(unknown[:5])}, which neither the spec nor "
                         "the state has (was the plan edited?)",
                         hint="run `runform plan --out FILE` again and apply the new plan")


def check_stale(plan: Plan, state: State | None, fresh: Plan) -> None:
    """Refuse ``plan`` if what it touches changed since; ``fresh`` is a plan made now."""
    if state is not None and plan.new_state is None and plan.lineage != state.lineage:
        raise StateError("Saved plan does not match the given state: it was created from a different "
                         "state lineage", hint="run `runform plan --out FILE` again")
    if state is not None and plan.new_state is not None and state.resources:
        raise StateError("Saved plan is stale: it was made against an empty state, which has been written since",
                         hint="run `runform plan --out FILE` again")
    stale = []
    for a in plan.changes:
        rec = state.get(a.address) if state else None
        now = rec.revision if rec else None
        if now != a.revision:
            stale.append(f"{a.address} changed in state since the plan")
            continue
        f = fresh.get(a.address)
        if f is not None and f.fingerprint != a.fingerprint:
            stale.append(f"{a.address}: its inputs changed since the plan")
    if stale:
        raise StateError("Saved plan is stale: " + "; ".join(stale),
                         hint="run `runform plan --out FILE` again and apply the new plan")
