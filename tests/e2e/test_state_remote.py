"""Remote state backends (s3:// and b2://) against moto's S3 server over HTTP.

Both modes run each test: ``s3`` (conditional writes: the If-None-Match lock) and ``b2`` (the
fixture rejects conditional writes as B2 does: the versioned-lock fallback). No fixed sleeps:
everything polls with a deadline.

moto's conditional PutObject/DeleteObject is check-then-write without a lock (storage.md §5),
so concurrent conditional creates could both succeed there, which real S3 never allows. The
``moto`` fixture serialises those two handlers (the server runs in this process) to give moto
S3's atomicity, and records every PUT body so a test can look for secrets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import runform.api
import yaml
from helpers import EXAMPLES, poll
from runform.errors import LockError, StateError
from runform.plugins import get_plugin_manager
from runform.state import remote as remote_module
from runform.state.model import State
from runform.state.remote import RemoteStateBackend
from runform.testing.s3 import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "not-a-real-secret-0000"  # examples/hello/hello.env


# --------------------------------------------------------------------------- fixtures


@attrs.define
class Moto:
    puts: list[tuple[str, str, bytes]] = attrs.field(factory=list)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Moto:
    from moto.s3.responses import S3Response

    rec = Moto()
    guard = threading.Lock()
    put, delete = S3Response.put_object, S3Response.delete_object

    def atomic_put(self: Any) -> Any:
        with guard:
            rec.puts.append((self.bucket_name, self.parse_key_name(), bytes(self.body or b"")))
            return put(self)

    def atomic_delete(self: Any) -> Any:
        with guard:
            return delete(self)

    monkeypatch.setattr(S3Response, "put_object", atomic_put)
    monkeypatch.setattr(S3Response, "delete_object", atomic_delete)
    return rec


@attrs.define
class Remote:
    mode: str
    server: S3Server
    bucket: str
    url: str
    moto: Moto

    @property
    def scheme(self) -> str:
        return "b2" if self.mode == "b2" else "s3"

    def backend(self, lease: float = 30.0, **kwargs: Any) -> RemoteStateBackend:
        return RemoteStateBackend(self.url, lease=lease, settle=0.05, **kwargs)

    def object_keys(self) -> list[str]:
        c = self.server.runform_client()
        return sorted(o["Key"] for o in c.list_objects_v2(Bucket=self.bucket).get("Contents", []))

    def lock_versions(self) -> list[str]:
        c = self.server.runform_client()
        r = c.list_object_versions(Bucket=self.bucket, Prefix="runs/hello.state.lock")
        return [v["Key"] for v in r.get("Versions", [])]


_SERVERS = {"s3": "s3_server", "b2": "s3_server_b2", "s3-conflicts": "s3_server_conflicts"}


@pytest.fixture(params=["s3", "b2", "s3-conflicts"])
def remote(request: pytest.FixtureRequest, moto: Moto, monkeypatch: pytest.MonkeyPatch) -> Remote:
    """Each test in three modes: S3 (the conditional lock), B2 (the versioned lock) and S3 whose
    server answers 409 ConditionalRequestConflict to 30 % of conditional writes."""
    mode = request.param
    server: S3Server = request.getfixturevalue(_SERVERS[mode])
    scheme = "b2" if mode == "b2" else "s3"
    bucket = server.make_bucket(versioned=mode == "b2")
    for k, v in server.env(scheme).items():
        monkeypatch.setenv(k, v)
    return Remote(mode, server, bucket, f"{scheme}://{bucket}/runs/hello.state", moto)


@pytest.fixture
def registered() -> Iterator[None]:
    """The remote backends on the process-wide plugin manager (until the entry point exists)."""
    pm = get_plugin_manager()
    added = not pm.pm.is_registered(remote_module)
    if added:
        pm.register(remote_module, name="remote_state")
    yield
    if added:
        pm.unregister("remote_state")


_until = partial(poll, timeout=20.0, step=0.05)


def _journal_puts(r: Remote) -> list[str]:
    return [q.path for q in r.server.stats.of("PutObject") if q.status == 200 and ".journal/" in q.path]


# --------------------------------------------------------------------------- apply / plan


def test_apply_then_empty_plan_state_in_the_bucket(remote: Remote, registered: None, tmp_path: Path) -> None:
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", project, ignore=shutil.ignore_patterns(".runform", "out", "__pycache__"))
    doc = yaml.safe_load((project / "runform.yaml").read_text())
    doc["tracker"] = {"kind": "none"}
    doc["state"] = {"backend": remote.url, "lock_lease": "20s"}
    (project / "runform.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    spec = runform.api.load(project / "runform.yaml")
    result = runform.api.apply(spec)
    assert result is not None and result.ok, result
    assert result.added == 8

    # the journal: one immutable object per append batch, at least intent + result per action
    puts = _journal_puts(remote)
    assert len(puts) >= 2 * 8 + 1, puts
    seqs = [int(p.rsplit("/", 1)[1].split(".")[0]) for p in puts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # ... compacted at the end: the snapshot holds them all, no journal object and no lock is left
    assert remote.object_keys() == ["runs/hello.state"]
    assert remote.lock_versions() == []
    if remote.mode == "b2":  # compaction deleted the journal versions for good
        c = remote.server.runform_client()
        v = c.list_object_versions(Bucket=remote.bucket, Prefix="runs/hello.state.journal/")
        assert not v.get("Versions") and not v.get("DeleteMarkers")
        # B2 bills every version: nothing older than the snapshot and its predecessor is left
        everything = c.list_object_versions(Bucket=remote.bucket, Prefix="runs/")
        kept = [x["Key"] for x in everything.get("Versions", [])]
        assert kept.count("runs/hello.state") <= 2 and set(kept) == {"runs/hello.state"}, kept
        assert not everything.get("DeleteMarkers")
    state = remote.backend().read()
    assert state is not None and state.seq == max(seqs) and not state.pending
    assert set(state.resources) >= {"instance.main", "secrets.env", "stage.join"}
    assert not (project / ".runform" / "state.json").exists()  # the state is remote only

    # a second plan is empty
    again = runform.api.plan(spec)
    assert not again.has_changes, [(a.address, a.kind, a.reason) for a in again.changes]
    # no secret value was ever written to the bucket (snapshot, journal or lock)
    assert remote.moto.puts and not [k for _, k, body in remote.moto.puts if SECRET.encode() in body]
    if remote.mode == "b2":  # the b2 backend never sent a conditional header
        cond = [q for q in remote.server.stats.of() if any(h in ("if-none-match", "if-match")
                                                         for h, _ in q.headers)]
        assert cond == []


# --------------------------------------------------------------------------- locking


def test_concurrent_lock_attempts_exactly_one_wins(remote: Remote) -> None:
    contenders = 8
    for _round in range(10):
        backends = [remote.backend() for _ in range(contenders)]
        barrier = threading.Barrier(contenders)
        won: list[Any] = []
        lost: list[BaseException] = []

        def attempt(b: RemoteStateBackend, barrier: threading.Barrier = barrier, won: list[Any] = won,
                    lost: list[BaseException] = lost) -> None:
            barrier.wait()
            try:
                won.append((b, b.lock("apply", timeout=0)))
            except LockError as err:
                lost.append(err)

        threads = [threading.Thread(target=attempt, args=(b,)) for b in backends]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(won) == 1 and len(lost) == contenders - 1, (won, lost)
        winner, info = won[0]
        for exc in lost:
            assert "Error acquiring the state lock" in str(exc) and "runform force-unlock" in str(exc)
        if remote.scheme == "s3":
            assert all(info.id in str(exc) for exc in lost)
        assert remote.backend().lock_info().id == info.id
        winner.unlock(info.id)
        assert remote.lock_versions() == []  # losers took their versions back, the winner its own


def test_force_unlock_by_id_and_the_old_holder_is_fenced(remote: Remote) -> None:
    a = remote.backend(lease=3)
    info = a.lock("apply")
    a.read()
    b = remote.backend(lease=3)
    with pytest.raises(LockError) as wrong:
        b.force_unlock("not-the-id")
    assert info.id in str(wrong.value) and "does not match" in str(wrong.value)
    b.force_unlock(info.id)
    assert b.lock_info() is None
    taken = b.lock("apply", timeout=0)
    assert taken.id != info.id

    def fenced() -> bool:
        try:
            a._lock.check()
        except LockError:
            return True
        return False

    _until(fenced, "the old holder to notice it lost the lock", timeout=15)
    with pytest.raises(LockError, match="was lost"):
        a.append([{"t": "done", "key": "x"}])
    assert not [k for k in remote.object_keys() if ".journal/" in k]
    b.unlock(taken.id)
    a.close()
    with pytest.raises(LockError, match="not locked"):
        b.force_unlock(info.id)


_HOLDER = """
import sys, time
from runform.state import lease
if sys.argv[3] == "foreign":
    lease.BOOT_ID = "another-machine"  # judged by its lease only, as a holder elsewhere is
from runform.state.remote import RemoteStateBackend
b = RemoteStateBackend(sys.argv[1], lease=float(sys.argv[2]), settle=0.05)
info = b.lock("apply")
print(info.id, flush=True)
time.sleep(600)
"""


def test_killed_holder_lease_lapses_and_the_lock_is_taken_over(remote: Remote) -> None:
    lease = 2.0 if remote.scheme == "s3" else 3.0  # b2 spends ~1.1 s of its lease deciding (moto: 1 s stamps)
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, remote.url, str(lease), "foreign"],
                             env=dict(os.environ), stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        printed: list[str] = []
        threading.Thread(target=lambda: printed.append(child.stdout.readline().strip()), daemon=True).start()

        def child_locked() -> str | None:
            assert child.poll() is None or printed, f"the child exited with {child.returncode}"
            return printed[0] if printed else None

        held_id = _until(child_locked, "the child to take the lock", timeout=30)
        me = remote.backend(lease=lease)
        held = me.lock_info()
        assert held is not None and held.id == held_id
        taken_at = time.monotonic()
        # alive: its heartbeat keeps the lock past its lease (lapse is judged at lease + 1 s)
        while time.monotonic() - taken_at < lease + 2.0:
            with pytest.raises(LockError) as busy:
                me.lock("apply", timeout=0)
            assert held.id in str(busy.value)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        killed = time.monotonic()
        info = me.lock("apply", timeout=30)
        took = time.monotonic() - killed
        assert info.id != held.id and me.lock_info().id == info.id
        assert took < lease + 10, took
        me.unlock(info.id)
        assert me.lock_info() is None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(remote: Remote) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = remote.backend(lease=300)
    info = holder.lock("apply")
    holder._lock._stop_heartbeat()  # freeze it: a crashed process ...
    holder._lock.held = None  # ... that never releases
    # rewrite its pid to the dead one, keeping its boot ID (same machine, this boot)
    c = remote.server.runform_client()
    key = "runs/hello.state.lock"
    if remote.scheme == "s3":
        body = c.get_object(Bucket=remote.bucket, Key=key)["Body"].read().replace(
            f'"pid": {os.getpid()}'.encode(), f'"pid": {dead.pid}'.encode())
        c.put_object(Bucket=remote.bucket, Key=key, Body=body)
    else:
        vid = holder._lock._vid
        body = c.get_object(Bucket=remote.bucket, Key=key, VersionId=vid)["Body"].read().replace(
            f'"pid": {os.getpid()}'.encode(), f'"pid": {dead.pid}'.encode())
        c.delete_object(Bucket=remote.bucket, Key=key, VersionId=vid)
        c.put_object(Bucket=remote.bucket, Key=key, Body=body)
    other = remote.backend(lease=300)
    t0 = time.monotonic()
    got = other.lock("apply", timeout=0)  # no waiting for the 300 s lease
    assert got.id != info.id and time.monotonic() - t0 < 10
    other.unlock(got.id)


# --------------------------------------------------------------------------- journal


def test_journal_append_read_compact(remote: Remote) -> None:
    b = remote.backend()
    with pytest.raises(StateError, match="without holding the state lock"):
        b.append([{"t": "done", "key": "x"}])
    info = b.lock("apply")
    assert b.read() is None
    st = State.new("hello")
    for batch in ([{"t": "meta", "lineage": st.lineage, "run": "hello", "salt": st.salt}],
                  [{"t": "intent", "key": "k1", "addr": "stage.a", "action": "create"}],
                  [{"t": "put", "key": "k1", "record": {"address": "stage.a", "attrs": {"n": 1}}},
                   {"t": "intent", "key": "k2", "addr": "stage.b", "action": "create"}]):
        for e in b.append(batch):
            st.fold(e)
    journal = [k for k in remote.object_keys() if ".journal/" in k]
    assert journal == [f"runs/hello.state.journal/{n:012d}.json" for n in (1, 2, 4)]
    # another reader replays the snapshot-less journal, pending intent included
    seen = remote.backend().read()
    assert seen is not None and seen.seq == 4 and seen.resources["stage.a"].attrs == {"n": 1}
    assert list(seen.pending) == ["k2"]
    b.compact(st)
    assert [k for k in remote.object_keys() if ".journal/" in k] == []
    for e in b.append([{"t": "done", "key": "k2"}]):
        st.fold(e)
    again = remote.backend().read()
    assert again is not None and again.seq == 5 and not again.pending and again.lineage == st.lineage
    b.unlock(info.id)


def test_corrupt_journal_object_names_it(remote: Remote) -> None:
    b = remote.backend()
    info = b.lock("apply")
    st = State.new("hello")
    b.append([{"t": "meta", "lineage": st.lineage, "run": "hello", "salt": st.salt}])
    b.unlock(info.id)
    remote.server.runform_client().put_object(Bucket=remote.bucket, Key="runs/hello.state.journal/000000000002.json",
                                              Body=b"{not json")
    with pytest.raises(StateError, match=r"000000000002\.json: corrupt journal object"):
        remote.backend().read()


# --------------------------------------------------------------------------- B2 specifics


def test_b2_mode_rejects_conditional_writes_and_the_b2_backend_still_works(s3_server_b2: S3Server, moto: Moto,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    bucket = s3_server_b2.make_bucket(versioned=True)
    c = s3_server_b2.runform_client()
    with pytest.raises(ClientError) as exc:
        c.put_object(Bucket=bucket, Key="x", Body=b"1", IfNoneMatch="*")
    assert exc.value.response["Error"]["Code"] == "NotImplemented"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501

    # s3:// against a B2 endpoint: the lock says what to do instead
    s3_env = s3_server_b2.env("s3")
    with pytest.raises(StateError) as s3err:
        RemoteStateBackend(f"s3://{bucket}/st", env=s3_env).lock("apply")
    assert "conditional writes" in str(s3err.value) and "b2://" in str(s3err.value)

    b = RemoteStateBackend(f"b2://{bucket}/st", env=s3_server_b2.env("b2"), settle=0.05)
    info = b.lock("apply")
    st = State.new("r")
    for e in b.append([{"t": "meta", "lineage": st.lineage, "run": "r", "salt": st.salt}]):
        st.fold(e)
    b.compact(st)
    b.unlock(info.id)
    back = RemoteStateBackend(f"b2://{bucket}/st", env=s3_server_b2.env("b2")).read()
    assert back is not None and back.lineage == st.lineage
    ops = s3_server_b2.stats.operations()
    assert "DeleteObjects" not in ops  # B2: per-key deletes only


def test_b2_without_versioning_gives_a_clear_error(s3_server_b2: S3Server, moto: Moto) -> None:
    bucket = s3_server_b2.make_bucket(versioned=False)
    b = RemoteStateBackend(f"b2://{bucket}/st", env=s3_server_b2.env("b2"), settle=0.05)
    with pytest.raises(StateError) as exc:
        b.lock("apply")
    msg = str(exc.value)
    assert "does not keep object versions" in msg and "enable versioning on the bucket" in msg
    c = s3_server_b2.runform_client()
    assert not c.list_objects_v2(Bucket=bucket).get("Contents")  # nothing left behind


def test_a_folder_url_and_a_missing_bucket_are_clear(s3_server: S3Server, moto: Moto) -> None:
    with pytest.raises(StateError, match="names a folder"):
        RemoteStateBackend("s3://bucket/runs/")
    b = RemoteStateBackend("s3://no-such-bucket/st", env=s3_server.env("s3"))
    with pytest.raises(StateError, match="does not exist"):
        b.read()


def test_remote_module_is_cheap_to_import() -> None:
    code = "import sys, runform.state.remote; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]  # runform loads it at start-up via the entry point


# --------------------------------------------------------------------------- 409 and the probe


def _lock_renewals(server: S3Server, status: int) -> list[Any]:
    return [q for q in server.stats.of("PutObject") if q.status == status and q.path.endswith(".lock")
            and "if-match" in dict(q.headers)]


@pytest.mark.parametrize("conflicts", [1, 6])
def test_a_renewal_answered_409_never_loses_the_lock(s3_server_conflicts: S3Server, moto: Moto,
                                                     conflicts: int) -> None:
    server = s3_server_conflicts
    bucket = server.make_bucket()
    b = RemoteStateBackend(f"s3://{bucket}/st", env=server.env("s3"), lease=6.0)
    server.conditions.conflict_share = 0.0
    info = b.lock("apply")
    server.stats.reset()
    server.conditions.conflict_share = 1.0  # every conditional write: 409, for a while
    _until(lambda: len(_lock_renewals(server, 409)) >= conflicts, f"{conflicts} renewals answered 409")
    server.conditions.conflict_share = 0.0
    _until(lambda: _lock_renewals(server, 200), "a renewal that went through")
    assert b._lock._lost is None
    b._lock.check()  # the fence: still ours, lease renewed
    st = State.new("r")
    server.conditions.conflict_share = 0.5  # journal and snapshot writes retry their 409s too
    for e in b.append([{"t": "meta", "lineage": st.lineage, "run": "r", "salt": st.salt}]):
        st.fold(e)
    b.compact(st)
    assert b.lock_info().id == info.id
    b.unlock(info.id)
    server.conditions.conflict_share = 0.0
    assert RemoteStateBackend(f"s3://{bucket}/st", env=server.env("s3")).read().lineage == st.lineage


def test_only_412_on_renewal_means_lost(s3_server: S3Server, moto: Moto) -> None:
    bucket = s3_server.make_bucket()
    b = RemoteStateBackend(f"s3://{bucket}/st", env=s3_server.env("s3"), lease=1.5)
    b.lock("apply")
    other = s3_server.runform_client()
    other.put_object(Bucket=bucket, Key="st.lock", Body=b'{"ID": "someone-else"}')  # taken over
    _until(lambda: b._lock._lost, "the holder to see its renewal refused (412)")
    with pytest.raises(LockError, match="was lost"):
        b.append([{"t": "done", "key": "x"}])
    b.close()


_GATE = """
import os, sys, time
deadline = time.monotonic() + 120
while not os.path.exists(os.environ["GATE"]):
    assert time.monotonic() < deadline, "the test never opened the gate"
    time.sleep(0.05)
"""


def test_plans_in_a_loop_during_an_apply_on_a_409_server(s3_server_conflicts: S3Server, moto: Moto,
                                                         tmp_path: Path) -> None:
    """AWS answers 409 when a plan's lock attempt overlaps the apply's renewal: the apply goes
    on, every plan says the state is locked, a second apply never mutates, and the next plan
    after the apply is empty."""
    from helpers import run_cli

    server = s3_server_conflicts
    bucket = server.make_bucket()
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", project, ignore=shutil.ignore_patterns(".runform", "out", "__pycache__"))
    (project / "steps" / "gate.py").write_text(_GATE)
    gate = tmp_path / "gate"
    doc = yaml.safe_load((project / "runform.yaml").read_text())
    doc["tracker"] = {"kind": "none"}
    doc["state"] = {"backend": f"s3://{bucket}/runs/hello.state", "lock_lease": "10s"}
    doc["stages"]["join"]["run"] = "python steps/gate.py && " + doc["stages"]["join"]["run"]
    doc["stages"]["join"]["deps"] = [*doc["stages"]["join"]["deps"], "steps/gate.py"]
    (project / "runform.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**server.env("s3"), "GATE": str(gate)}
    full_env = {**os.environ, **env}
    full_env.pop("RUNFORM_DEBUG", None)
    apply = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=project,
                             env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: server.stats.of("PutObject") and any(".lock" in q.path for q in server.stats.of("PutObject")),
               "the apply to take the lock", timeout=60)
        plans = []
        second = None
        deadline = time.monotonic() + 150
        while not (len(plans) >= 3 and _lock_renewals(server, 409)):
            assert time.monotonic() < deadline, ("no renewal was answered 409", server.stats.operations())
            assert apply.poll() is None, apply.communicate()
            plans.append(run_cli("plan", cwd=project, env=env))
            if second is None:
                second = run_cli("apply", "--auto-approve", cwd=project, env=env)
        gate.write_text("open")
        out, err = apply.communicate(timeout=120)
    finally:
        gate.write_text("open")
        if apply.poll() is None:
            apply.kill()
            apply.wait()
    assert apply.returncode == 0, (out, err)
    assert "Apply complete" in out or "complete" in out.lower(), out
    for p in plans:  # each plan met the apply's lock, cleanly
        assert p.returncode == 1 and "the state is locked" in p.stderr, (p.stdout, p.stderr)
        assert "Traceback" not in p.stderr
    assert second is not None and second.returncode == 1 and "the state is locked" in second.stderr
    assert server.conditions.conflicts > 0
    # the second apply never wrote a journal entry: every journal PUT came from the first one
    final = run_cli("plan", "--detailed-exitcode", cwd=project, env=env)
    assert final.returncode == 0, (final.stdout, final.stderr)


def test_an_endpoint_that_ignores_conditions_is_refused_with_the_fix(s3_server_ignoring: S3Server, moto: Moto,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from runform.state import lock_conditional

    monkeypatch.setattr(lock_conditional, "_PROBED", {})
    server = s3_server_ignoring
    bucket = server.make_bucket()
    cache = tmp_path / "probe.json"
    b = RemoteStateBackend(f"s3://{bucket}/st", env=server.env("s3"), probe_cache=cache)
    with pytest.raises(StateError) as exc:
        b.lock("apply")
    msg = str(exc.value)
    assert "ignores them" in msg and f"s3://{bucket}/st?lock=versioned" in msg
    assert "Contents" not in server.runform_client().list_objects_v2(Bucket=bucket)  # the scratch key went
    assert json.loads(cache.read_text()) == {server.endpoint: False}
    # cached: refused again without a probe
    server.stats.reset()
    monkeypatch.setattr(lock_conditional, "_PROBED", {})
    with pytest.raises(StateError, match="ignores them"):
        RemoteStateBackend(f"s3://{bucket}/st", env=server.env("s3"), probe_cache=cache).lock("apply")
    assert server.stats.count("PutObject") == 0

    # the fix: the versioned lock, selectable on any S3-compatible endpoint
    versioned = server.make_bucket(versioned=True)
    v = RemoteStateBackend(f"s3://{versioned}/st?lock=versioned", env=server.env("s3"), settle=0.05)
    info = v.lock("apply")
    st = State.new("r")
    for e in v.append([{"t": "meta", "lineage": st.lineage, "run": "r", "salt": st.salt}]):
        st.fold(e)
    v.compact(st)
    with pytest.raises(LockError):
        RemoteStateBackend(f"s3://{versioned}/st?lock=versioned", env=server.env("s3"), settle=0.05).lock("apply")
    v.unlock(info.id)
    back = RemoteStateBackend(f"s3://{versioned}/st?lock=versioned", env=server.env("s3")).read()
    assert back is not None and back.lineage == st.lineage


def test_the_probe_runs_once_per_endpoint(s3_server: S3Server, moto: Moto, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    from runform.state import lock_conditional

    monkeypatch.setattr(lock_conditional, "_PROBED", {})
    bucket = s3_server.make_bucket()
    cache = tmp_path / "probe.json"
    for _ in range(2):
        b = RemoteStateBackend(f"s3://{bucket}/st", env=s3_server.env("s3"), probe_cache=cache)
        b.unlock(b.lock("apply").id)
    probes = [q for q in s3_server.stats.of("PutObject") if ".probe-" in q.path]
    assert [q.status for q in probes] == [200, 412]
    assert json.loads(cache.read_text()) == {s3_server.endpoint: True}
    assert "Contents" not in s3_server.runform_client().list_objects_v2(Bucket=bucket)
    monkeypatch.setattr(lock_conditional, "_PROBED", {})  # a new process: the file answers
    s3_server.stats.reset()
    b = RemoteStateBackend(f"s3://{bucket}/st", env=s3_server.env("s3"), probe_cache=cache)
    b.unlock(b.lock("apply").id)
    assert not [q for q in s3_server.stats.of("PutObject") if ".probe-" in q.path]


@pytest.mark.parametrize("url, fix", [("s3://b/st?lock=sideways", "lock=versioned"),
                                      ("s3://b/st?locks=versioned", "the only option"),
                                      ("b2://b/st?lock=conditional", "drop the option")])
def test_a_bad_lock_option_is_clear(url: str, fix: str) -> None:
    with pytest.raises(StateError) as exc:
        RemoteStateBackend(url)
    assert "state.backend" in str(exc.value) and fix in str(exc.value)
