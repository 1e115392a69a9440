"""A holder whose lock was taken over (paused past its lease) writes nothing more."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runform.errors import LockError
from runform.state.local import LocalStateBackend


def test_a_holder_whose_lock_was_taken_over_cannot_append(tmp_path: Path) -> None:
    backend = LocalStateBackend(tmp_path / ".runform", lease=30.0)
    info = backend.lock("apply")
    backend.append([{"t": "meta", "note": "mine"}])
    lock_file = tmp_path / ".runform" / "lock.json"
    # another process found the lease lapsed and took the lock
    taken = {**json.loads(lock_file.read_text()), "ID": "someone-else", "pid": 1, "Who": "other@host",
             "expires": time.time() + 30}
    lock_file.write_text(json.dumps(taken))
    before = (tmp_path / ".runform" / "journal.jsonl").read_bytes()
    with pytest.raises(LockError, match="lock was lost"):
        backend.append([{"t": "meta", "note": "after the takeover"}])
    assert (tmp_path / ".runform" / "journal.jsonl").read_bytes() == before
    backend.unlock(info.id)  # releasing never removes someone else's lock
    assert json.loads(lock_file.read_text())["ID"] == "someone-else"
