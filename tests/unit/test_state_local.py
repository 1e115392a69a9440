"""The local state backend under crashes and damage: compaction killed at every step, torn and
garbled journal tails, a corrupt journal line in the middle, the layout an older runform's
interrupted compaction left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runform.errors import StateError
from runform.state.local import LocalStateBackend
from runform.state.model import State

# the filesystem calls compaction is made of; a crash is simulated just before each one
FS_CALLS = ("link", "replace", "rename", "fsync", "unlink", "truncate")


def _put(addr: str, **attrs: Any) -> dict[str, Any]:
    return {"t": "put", "key": f"k-{addr}", "record": {"address": addr, "attrs": attrs}}


def _journal(backend: LocalStateBackend, state: State | None, *entries: dict[str, Any]) -> State:
    """What Workspace.journal does: append, then fold what was written into the live state."""
    for e in backend.append(list(entries)):
        if state is None:
            state = State(lineage=e["lineage"], run=e["run"], salt=e["salt"])
        else:
            state.fold(e)
    assert state is not None
    return state


def _history(folder: Path, *, compacted: bool) -> tuple[LocalStateBackend, State]:
    """A state with a snapshot (if ``compacted``) and journal entries after it; the backend is
    left open, as an apply leaves it right before its final compaction."""
    b = LocalStateBackend(folder)
    st = _journal(b, None, {"t": "meta", "lineage": "lin-1", "run": "r", "salt": "s"})
    st = _journal(b, st, {"t": "intent", "key": "k-instance.main", "addr": "instance.main"},
                  _put("instance.main", host="10.0.0.1"), _put("stage.a", out=1))
    if compacted:
        b.compact(st)
    st = _journal(b, st, {"t": "intent", "key": "k-stage.b", "addr": "stage.b"}, _put("stage.b", out=2),
                  {"t": "rm", "key": "k-stage.a", "addr": "stage.a"},
                  {"t": "intent", "key": "k-left", "addr": "stage.c"})
    return b, st


def _view(st: State | None) -> dict[str, Any]:
    assert st is not None
    return {"lineage": st.lineage, "serial": st.serial, "pending": sorted(st.pending),
            "resources": {a: (r.attrs, r.revision) for a, r in st.resources.items()}}


def _crash_before_call(monkeypatch: pytest.MonkeyPatch, n: int, crash: Any) -> None:
    """Make the n-th filesystem call (counting all of FS_CALLS) call ``crash()`` instead."""
    count = [0]
    for name in FS_CALLS:
        real = getattr(os, name)

        def wrapper(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] == n:
                crash()
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, wrapper)


class _Crash(BaseException):
    """Raised where a kill would have stopped the process (nothing catches it)."""


def _crash() -> None:
    raise _Crash


def _check_survivor(folder: Path, expected: dict[str, Any]) -> None:
    """The state reads back whole, and life goes on: one more put bumps the serial by exactly one
    (nothing replayed twice, no seq reused), and survives the next compaction."""
    assert (folder / "state.json").exists() or not (folder / "state.json.bak").exists()
    b = LocalStateBackend(folder)
    st = b.read()
    assert _view(st) == expected
    st = _journal(b, st, _put("stage.d", out=4))
    b.compact(st)
    b.close()
    again = _view(LocalStateBackend(folder).read())
    assert again["serial"] == expected["serial"] + 1
    assert again["resources"]["stage.d"] == ({"out": 4}, expected["serial"] + 1)
    assert {a: v for a, v in again["resources"].items() if a != "stage.d"} == expected["resources"]


@pytest.mark.parametrize("compacted", [True, False], ids=["later-compaction", "first-compaction"])
def test_compaction_crashing_at_every_step_leaves_the_same_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compacted: bool) -> None:
    crashed_at = 0
    for n in range(1, 60):
        folder = tmp_path / f"crash{n}"
        b, st = _history(folder, compacted=compacted)
        expected = _view(LocalStateBackend(folder).read())
        assert expected["resources"].keys() == {"instance.main", "stage.b"}
        with monkeypatch.context() as m:
            _crash_before_call(m, n, _crash)
            try:
                b.compact(st)
            except _Crash:
                crashed_at = n
            else:
                break
            finally:
                m.undo()
        b.close()
        if compacted:
            assert (folder / "state.json").exists(), f"state.json missing after a crash at step {n}"
        _check_survivor(folder, expected)
    else:
        pytest.fail("compaction never finished")
    # the backup, the temp snapshot, the replace, the folder fsync, the journal reset
    assert crashed_at >= (6 if compacted else 4), crashed_at


_CHILD = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_state_local import FS_CALLS, _crash_before_call
from runform.state.local import LocalStateBackend

class Patch:
    def setattr(self, obj, name, value):
        setattr(obj, name, value)

b = LocalStateBackend(Path(sys.argv[1]))
st = b.read()
b.append([{"t": "done", "key": "k-none"}])  # an open journal, as an apply has
_crash_before_call(Patch(), int(sys.argv[2]), lambda: os._exit(70))
b.compact(st)
os._exit(0)
"""


def test_compaction_killed_at_every_step_leaves_the_same_state(tmp_path: Path) -> None:
    """The same with a real process death (os._exit: no cleanup, no finally, no flush)."""
    pristine = tmp_path / "pristine"
    b, _ = _history(pristine, compacted=True)
    b.close()
    expected = _view(LocalStateBackend(pristine).read())
    killed = 0
    for n in range(1, 60):
        folder = tmp_path / f"kill{n}"
        shutil.copytree(pristine, folder)
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(n), str(Path(__file__).parent)],
                              check=False, capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            break
        assert proc.returncode == 70, proc.stderr
        killed += 1
        assert (folder / "state.json").exists(), f"state.json missing after a kill at step {n}"
        _check_survivor(folder, expected)
    else:
        pytest.fail("compaction never finished")
    assert killed >= 6, killed


def test_an_older_runforms_interrupted_compaction_is_recovered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Older runform renamed state.json to state.json.bak first: a kill there left .bak, a
    half-written state.tmp and the whole journal, and no state.json."""
    folder = tmp_path / "state"
    b, _ = _history(folder, compacted=True)
    b.close()
    expected = _view(LocalStateBackend(folder).read())
    os.replace(folder / "state.json", folder / "state.json.bak")
    (folder / "state.tmp").write_text('{"version": 1, "lin')

    st = LocalStateBackend(folder).read()
    assert _view(st) == expected
    err = capsys.readouterr().err
    assert "state.json was missing" in err and "state.json.bak" in err, err
    assert (folder / "state.json").exists()  # put back, so the warning is said once
    assert _view(LocalStateBackend(folder).read()) == expected
    assert capsys.readouterr().err == ""
    _check_survivor(folder, expected)


def test_recovery_without_hard_links_reads_the_backup_every_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "state"
    b, _ = _history(folder, compacted=True)
    b.close()
    expected = _view(LocalStateBackend(folder).read())
    os.replace(folder / "state.json", folder / "state.json.bak")

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    assert _view(LocalStateBackend(folder).read()) == expected
    assert "state.json is missing" in capsys.readouterr().err
    assert not (folder / "state.json").exists()
    # compaction falls back to copying the backup, and writes state.json again
    b = LocalStateBackend(folder)
    st = _journal(b, b.read(), _put("stage.d", out=4))
    b.compact(st)
    b.close()
    monkeypatch.undo()
    assert (folder / "state.json").exists()
    assert _view(LocalStateBackend(folder).read())["serial"] == expected["serial"] + 1


def test_a_compaction_keeps_the_previous_snapshot_as_the_backup(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    b, st = _history(folder, compacted=True)
    before = (folder / "state.json").read_bytes()
    b.compact(st)
    b.close()
    assert (folder / "state.json.bak").read_bytes() == before
    assert (folder / "state.json").read_bytes() != before
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == []
    assert (folder / "journal.jsonl").read_bytes() == b""


# ------------------------------------------------------------------------------- journal tails
BAD_TAILS = {
    "torn": b'{"seq":99,"t":"put","rec',
    "garbled-with-newline": b'{"seq":99,"t":"put","rec\n',
    "binary-with-newline": b"\x00\xff\x00\n",
    "not-an-object": b"[1, 2]\n",
    "garbled-then-blank-lines": b'{"seq":99,\n\n  \n',
}


@pytest.mark.parametrize("tail", list(BAD_TAILS.values()), ids=list(BAD_TAILS))
def test_an_unparsable_last_journal_line_is_dropped_before_the_next_append(tmp_path: Path, tail: bytes) -> None:
    folder = tmp_path / "state"
    b, _ = _history(folder, compacted=True)
    b.close()
    expected = _view(LocalStateBackend(folder).read())
    good = (folder / "journal.jsonl").read_bytes()
    with open(folder / "journal.jsonl", "ab") as f:
        f.write(tail)

    b = LocalStateBackend(folder)
    st = b.read()
    assert _view(st) == expected  # skipped on read
    st = _journal(b, st, _put("stage.d", out=4))
    b.close()
    data = (folder / "journal.jsonl").read_bytes()
    assert data.startswith(good) and tail not in data  # cut before the append, not left in the middle
    after = _view(LocalStateBackend(folder).read())  # and every later read works
    assert after["serial"] == expected["serial"] + 1 and "stage.d" in after["resources"]
    assert after == _view(st)


def test_a_whole_last_entry_without_its_newline_is_kept(tmp_path: Path) -> None:
    """read() replays it, so the next append must not cut it: it ends the line instead."""
    folder = tmp_path / "state"
    b, _ = _history(folder, compacted=True)
    b.close()
    with open(folder / "journal.jsonl", "ab") as f:
        f.write(b'{"seq":50,"t":"put","key":"k-e","record":{"address":"stage.e","attrs":{}}}')
    b = LocalStateBackend(folder)
    st = b.read()
    assert st is not None and "stage.e" in st.resources
    st = _journal(b, st, _put("stage.d", out=4))
    b.close()
    assert st.seq == 51
    assert _view(LocalStateBackend(folder).read()) == _view(st)


def test_a_corrupt_journal_line_in_the_middle_is_an_error_naming_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    b, _ = _history(folder, compacted=True)
    b.close()
    journal = folder / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")
    lines[1] = b'{"seq":6,"t":"put","rec'  # line 2 of 4
    journal.write_bytes(b"\n".join(lines))
    damaged = journal.read_bytes()

    with pytest.raises(StateError) as err:
        LocalStateBackend(folder).read()
    assert err.value.message.startswith(f"{journal}:2: corrupt journal entry"), err.value.message
    assert err.value.hint and "line 2" in err.value.hint and "backup" in err.value.hint
    # nor is anything appended after it
    with pytest.raises(StateError, match=r"journal\.jsonl:2: corrupt journal entry"):
        LocalStateBackend(folder).append([{"t": "done", "key": "x"}])
    assert journal.read_bytes() == damaged
