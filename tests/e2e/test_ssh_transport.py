"""SSHTransport against a real OpenSSH sshd on loopback (the ``sshd`` fixture): commands,
atomic 0600 writes, host key pinning, reconnects. No mocks, no sleeps."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import paramiko
import pytest

from runform.errors import HostKeyError, ProviderError
from runform.interfaces import Transport
from runform.transport.ssh.hostkeys import fingerprint, key_string
from runform.transport.ssh import ConnectionLostError, SSHTransport
from runform.testing.sshd import SSHD, free_port

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


@pytest.fixture
def transport(sshd: SSHD):
    with SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file) as t:
        yield t


def test_is_a_transport(transport: SSHTransport) -> None:
    assert isinstance(transport, Transport)


def test_run_returns_exit_code_output_and_feeds_stdin(transport: SSHTransport) -> None:
    r = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, b"out\n", b"err\n", False)
    # argv is quoted for the remote shell: spaces and quotes arrive intact
    assert transport.run(["printf", "%s|", "a b", "it's", "$HOME"]).stdout == b"a b|it's|$HOME|"
    payload = os.urandom(2_000_000)  # far beyond the SSH window: stdin and stdout flow together
    r = transport.run(["cat"], stdin=payload)
    assert r.ok and r.stdout == payload


def test_env_travels_in_a_0600_file_never_on_a_command_line(transport: SSHTransport) -> None:
    token = f"s3cret-{uuid.uuid4().hex[:8]} 'quoted'"  # this call's own: other runs share the home
    script = (
        'echo "$TOKEN"; tr "\\0" " " < /proc/$PPID/cmdline; echo; '
        f"cat ~/.runform-env-* 2>/dev/null | grep -c {token.split()[0]} || true"
    )
    r = transport.run(["sh", "-c", script], env={"TOKEN": token})
    value, parent_cmdline, leftovers = r.stdout.decode().splitlines()
    assert value == token
    assert token.split()[0] not in parent_cmdline  # the login shell's command line has no value
    assert leftovers == "0"  # this call's env file is removed before the command starts


def test_run_stream_hands_output_over_as_it_comes(transport: SSHTransport) -> None:
    chunks: list[bytes] = []
    r = transport.run_stream(["sh", "-c", "echo one; echo two >&2; exit 4"], chunks.append)
    assert r.exit_code == 4
    assert b"".join(chunks).splitlines() == [b"one", b"two"]


def test_timeout_raises(transport: SSHTransport) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out"):
        transport.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_put_bytes_is_atomic_and_has_the_mode(transport: SSHTransport, tmp_path) -> None:
    target = tmp_path / "secrets.env"
    target.write_text("old")
    target.chmod(0o644)
    transport.put_bytes(b"KEY=value\n", str(target), mode=0o600)
    assert target.read_bytes() == b"KEY=value\n"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["secrets.env"]  # no temporary left behind
    assert transport.get_bytes(str(target)) == b"KEY=value\n"
    transport.put_file(target, str(tmp_path / "copy"), mode=0o640)
    assert os.stat(tmp_path / "copy").st_mode & 0o777 == 0o640


def test_files_are_created_with_their_mode_from_the_start(
    transport: SSHTransport, tmp_path
) -> None:
    """put_bytes writes through open_new: the OPEN request itself carries the mode. Observe a
    file right after creation, before any byte or chmod: already 0600 (the server's umask of
    022 alone would have given 0644)."""
    path = str(tmp_path / "fresh")
    f = transport.open_new(path, 0o600)
    try:
        assert transport.run(["stat", "-c", "%a %s", path]).stdout == b"600 0\n"
    finally:
        f.close()
    with pytest.raises(OSError):  # exclusive: an existing name is never reused
        transport.open_new(path, 0o600)


def test_get_bytes_of_a_missing_file(transport: SSHTransport, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        transport.get_bytes(str(tmp_path / "nope"))
    assert transport.run(["true"]).ok and transport.connects == 1  # not taken for a dead connection


def test_host_key_is_pinned_on_first_use_and_a_changed_key_refused(sshd: SSHD) -> None:
    first = SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file).connect()
    assert first.host_key == sshd.host_key
    old = first.host_key
    new = sshd.regenerate_host_key()  # the machine "re-installed" (sessions cut, same port)
    with pytest.raises(HostKeyError) as err:
        SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file, pinned_host_key=old).connect()
    message = str(err.value)
    where = f"127.0.0.1:{sshd.port}"
    assert where in message and fingerprint(old) in message and fingerprint(new) in message
    assert f"runform apply --accept-host-key {where}" in message
    # the transport that pinned on first use does not silently accept the new key either
    with pytest.raises(HostKeyError):
        first.run(["true"])
    first.close()


def test_a_pin_of_another_key_type_is_refused(sshd: SSHD) -> None:
    other = key_string(paramiko.ECDSAKey.generate())  # the server only has an ed25519 key
    with pytest.raises(HostKeyError, match="accept-host-key"):
        SSHTransport(
            sshd.host, sshd.port, sshd.user, sshd.key_file, pinned_host_key=other
        ).connect()


def test_reconnects_after_the_serving_sshd_child_is_killed(
    sshd: SSHD, transport: SSHTransport, tmp_path
) -> None:
    assert transport.run(["true"]).ok
    assert sshd.session_pids()
    assert sshd.kill_sessions() > 0
    assert transport.run(["echo", "back"]).stdout == b"back\n"
    sshd.kill_sessions()
    transport.put_bytes(b"x", str(tmp_path / "after"))
    assert transport.get_bytes(str(tmp_path / "after")) == b"x"
    assert transport.connects == 3


def test_a_connection_cut_mid_command_is_reported_not_retried(
    sshd: SSHD, transport: SSHTransport
) -> None:
    started = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            transport.run_stream(
                ["sh", "-c", "echo started; exec sleep 30"], lambda _b: started.set()
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(10)
    sshd.kill_sessions()
    worker.join(10)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLostError)
    assert f"127.0.0.1:{sshd.port}" in str(outcome[0])


def test_unreachable_host_is_a_provider_error_naming_it() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as err:
        SSHTransport("127.0.0.1", port, "root", None, retry_timeout=0.5).connect()
    assert f"127.0.0.1:{port}" in str(err.value) and "unreachable" in str(err.value)
    assert "fix:" in str(err.value)
    assert time.monotonic() - t0 < 10


def test_a_rejected_key_fails_at_once(sshd: SSHD, tmp_path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    t0 = time.monotonic()
    with pytest.raises(ProviderError, match="authentication failed"):
        SSHTransport(sshd.host, sshd.port, sshd.user, stranger, retry_timeout=30).connect()
    assert time.monotonic() - t0 < 10  # not retried for 30 s


def test_the_local_transport_keeps_the_same_timeout_contract() -> None:
    from runform.providers.local import LocalTransport

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out after 0.5s"):
        LocalTransport().run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - t0 < 5
