"""The state backend contract (``runform.interfaces.StateBackend``) as reusable tests.

Fixtures a subclass gives:

- ``make_state_backend``: ``make_state_backend(lease=30.0) -> StateBackend``, a new backend
  object on one store for the whole test (two calls give two clients of the same state, as two
  runform processes would be), with the lock's lease in seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from runform.errors import LockError
from runform.interfaces import StateBackend
from runform.state.model import State

MakeBackend = Callable[..., StateBackend]


def _fold(state: State, written: Any, sent: list[dict[str, Any]]) -> None:
    # append returns the entries as written (with their seq); a backend returning None is folded
    # from what was sent
    for entry in written if isinstance(written, list) else sent:
        state.fold(entry)


class StateBackendContract:
    """Journal (append, read, compact), lock (one holder, unlock, force-unlock) and lease."""

    lease_s = 1.5  # the lease the lease test runs with: the shortest your lock accepts

    def test_it_is_a_state_backend(self, make_state_backend: MakeBackend) -> None:
        assert isinstance(make_state_backend(), StateBackend), \
            "a method of runform.interfaces.StateBackend is missing"

    def test_journal_append_read_compact(self, make_state_backend: MakeBackend) -> None:
        b = make_state_backend()
        info = b.lock("apply")
        try:
            assert b.read() is None, "a new store has no state"
            st = State.new("conformance")
            batches: list[list[dict[str, Any]]] = [
                [{"t": "meta", "lineage": st.lineage, "run": "conformance", "salt": st.salt}],
                [{"t": "intent", "key": "k1", "addr": "stage.a", "action": "create"}],
                [{"t": "put", "key": "k1", "record": {"address": "stage.a", "attrs": {"n": 1}}},
                 {"t": "intent", "key": "k2", "addr": "stage.b", "action": "create"}]]
            for batch in batches:
                _fold(st, b.append(batch), batch)
            seen = make_state_backend().read()  # another client replays the journal
            assert seen is not None and seen.lineage == st.lineage and seen.run == "conformance"
            assert seen.resources["stage.a"].attrs == {"n": 1}
            assert list(seen.pending) == ["k2"], "an intent without its outcome is pending"
            b.compact(st)
            after = make_state_backend().read()
            assert after is not None and after.resources["stage.a"].attrs == {"n": 1}
            assert list(after.pending) == ["k2"]
            done: list[dict[str, Any]] = [{"t": "done", "key": "k2"}, {"t": "rm", "addr": "stage.a"}]
            _fold(st, b.append(done), done)
            last = make_state_backend().read()
            assert last is not None and not last.pending and "stage.a" not in last.resources
            assert last.serial == st.serial and last.lineage == st.lineage
        finally:
            b.unlock(info.id)

    def test_one_holder_at_a_time(self, make_state_backend: MakeBackend) -> None:
        a, b = make_state_backend(), make_state_backend()
        held = a.lock("apply")
        with pytest.raises(LockError) as busy:
            b.lock("plan", timeout=0)
        assert "force-unlock" in str(busy.value) or held.id in str(busy.value), \
            "the error says who holds the lock and how to take it over"
        a.unlock(held.id)
        again = b.lock("plan", timeout=0)
        assert again.id != held.id
        b.unlock(again.id)

    def test_a_waiting_lock_gets_it_when_released(self, make_state_backend: MakeBackend) -> None:
        import threading

        a, b = make_state_backend(), make_state_backend()
        held = a.lock("apply")
        threading.Timer(0.5, a.unlock, args=(held.id,)).start()
        got = b.lock("plan", timeout=30)
        assert got.id != held.id
        b.unlock(got.id)

    def test_force_unlock_needs_the_holders_id(self, make_state_backend: MakeBackend) -> None:
        a, b = make_state_backend(), make_state_backend()
        held = a.lock("apply")
        with pytest.raises(LockError):
            b.force_unlock("not-the-id")
        b.force_unlock(held.id)
        taken = b.lock("apply", timeout=0)
        assert taken.id != held.id
        b.unlock(taken.id)
        with pytest.raises(LockError):
            b.force_unlock(held.id)  # nothing of that id is held any more

    def test_a_live_holder_keeps_its_lease(self, make_state_backend: MakeBackend) -> None:
        """The holder renews its lease while it lives: past the lease, the lock is still held."""
        lease = self.lease_s
        a, b = make_state_backend(lease=lease), make_state_backend(lease=lease)
        held = a.lock("apply")
        try:
            end = time.monotonic() + lease * 2 + 1.0
            while time.monotonic() < end:
                with pytest.raises(LockError):
                    b.lock("plan", timeout=0)
                time.sleep(0.2)
        finally:
            a.unlock(held.id)
        got = b.lock("plan", timeout=0)
        b.unlock(got.id)

    @pytest.fixture
    def state_backend_script(self) -> str | None:
        return None

    def test_a_dead_holders_lock_is_taken_over(self, make_state_backend: MakeBackend,
                                               state_backend_script: str | None) -> None:
        """A holder killed with SIGKILL never unlocks: its lock is taken over within its lease."""
        if state_backend_script is None:
            pytest.skip("give state_backend_script to test a holder that dies")
        code = (f"LEASE = {self.lease_s!r}\n{state_backend_script}\n"
                "info = b.lock('apply')\nprint(info.id, flush=True)\nimport time\ntime.sleep(600)\n")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            assert child.stdout is not None
            held = child.stdout.readline().strip()  # the holder's lock id, once it holds it
            assert held, f"the holder did not take the lock (exit {child.wait()})"
            me = make_state_backend(lease=self.lease_s)
            with pytest.raises(LockError):
                me.lock("plan", timeout=0)
            child.kill()
            child.wait(timeout=30)
            got = me.lock("plan", timeout=self.lease_s * 3 + 10)
            assert got.id != held
            me.unlock(got.id)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
