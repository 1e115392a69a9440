"""A real SSH server for tests: Debian's OpenSSH ``sshd`` on 127.0.0.1, a free port, temporary
host and user keys (ed25519), logging in as the current user.

    with SSHD(tmp_path) as server:
        SSHTransport(server.host, server.port, server.user, server.key_file).run(["true"])

or the pytest fixture ``sshd`` (from runform's pytest plugin). Nothing here sleeps: readiness
is sshd's own "Server listening" log line, awaited with a deadline.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SSHD_BIN = "/usr/sbin/sshd"


class SSHD:
    """One sshd process with its own config, keys and log under ``workdir``."""

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self._auto_port = port is None  # a port taken between choosing and binding: choose again
        self.user = getpass.getuser()
        self.key_file = self.workdir / "id_ed25519"
        self.host_key_file = self.workdir / "ssh_host_ed25519_key"
        self.authorized_keys = self.workdir / "authorized_keys"
        self.config = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._listening = threading.Event()

    @staticmethod
    def available() -> bool:
        return os.access(SSHD_BIN, os.X_OK) and shutil.which("ssh-keygen") is not None

    # ------------------------------------------------------------------ keys
    @property
    def host_key(self) -> str:
        """The server's public host key, ``"ssh-ed25519 <base64>"`` (what runform pins)."""
        return " ".join(self.host_key_file.with_suffix(".pub").read_text().split()[:2])

    @property
    def compute(self) -> dict[str, Any]:
        """A spec ``compute`` block for the ``ssh`` provider, this server (add ``root``)."""
        return {
            "provider": "ssh",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.key_file),
        }

    def _keygen(self, path: Path) -> None:
        for p in (path, path.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runform-test", "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def regenerate_host_key(self) -> str:
        """Give the server a new host key (a re-installed machine); restarts sshd on the same
        port and returns the new public key."""
        self.stop()
        self._keygen(self.host_key_file)
        self.start()
        return self.host_key

    # ------------------------------------------------------------------ process
    def start(self, timeout: float = 15.0) -> SSHD:
        """Start sshd and wait (up to ``timeout`` s) until it listens."""
        for _attempt in range(3 if self._auto_port else 1):
            if self._start_once(timeout):
                return self
            if "Cannot bind" not in self.log_path.read_text(errors="replace"):
                break
            self.port = free_port(self.host)
        raise RuntimeError(
            f"sshd did not start on {self.host}:{self.port}; see {self.log_path}:\n"
            + self.log_path.read_text(errors="replace")[-2000:]
        )

    def _start_once(self, timeout: float) -> bool:
        if not self.key_file.exists():
            self._keygen(self.key_file)
            self.authorized_keys.write_text(self.key_file.with_suffix(".pub").read_text())
        if not self.host_key_file.exists():
            self._keygen(self.host_key_file)
        self.config.write_text(self._config_text())
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self._listening.clear()
        self.proc = subprocess.Popen(
            [SSHD_BIN, "-D", "-e", "-f", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        threading.Thread(target=self._pump_log, args=(self.proc,), daemon=True).start()
        if not self._listening.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            return False
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        commands = [pid for pid in _descendants(self.proc.pid) if _comm(pid) not in _SSHD_NAMES]
        self.kill_sessions()  # the listener's exit alone leaves running sessions up
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # What still runs under a session ends with SIGTERM, so shells run their exit traps
        _signal_all(commands, signal.SIGTERM)

    def __enter__(self) -> SSHD:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill_sessions(self) -> int:
        """SIGKILL every sshd process serving a connection, cutting all sessions as a dropped
        network does; the listener keeps accepting. Returns how many were killed.

        Commands running under those sessions are left alone, as on a real drop (no pty, so no
        hangup): they see their pipes close. Killing them too would cut shells short in their rc
        files, where tools such as pyenv hold a lock that then outlives them."""
        if self.proc is None:
            return 0
        victims = [pid for pid in _descendants(self.proc.pid) if _comm(pid) in _SSHD_NAMES]
        _signal_all(victims, signal.SIGKILL)
        return len(victims)

    def session_pids(self) -> list[int]:
        """The sshd children serving connections now (one per connection)."""
        return _children(self.proc.pid) if self.proc else []

    def _pump_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with open(self.log_path, "ab", buffering=0) as log:
            for line in proc.stderr:
                log.write(line)
                if b"Server listening on" in line:
                    self._listening.set()
        self._listening.set()  # exited: stop waiting (start() then sees poll() is not None)

    def _config_text(self) -> str:
        return "\n".join(
            [
                f"Port {self.port}",
                f"ListenAddress {self.host}",
                f"HostKey {self.host_key_file}",
                f"PidFile {self.workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                f"AllowUsers {self.user}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "StrictModes no",
                "UsePAM no",
                "PrintMotd no",
                "MaxStartups 100",
                "MaxSessions 100",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid, ...
        if ppid == pid:
            out.append(int(entry))
    return out


# OpenSSH 9.8 split the per-connection process into sshd-session (and sshd-auth)
_SSHD_NAMES = ("sshd", "sshd-session", "sshd-auth")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = _children(pid)
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(_children(p))
    return found


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD]:
    """A running :class:`SSHD` for one test (skipped where OpenSSH's sshd is not installed)."""
    if not SSHD.available():
        pytest.skip(f"{SSHD_BIN} or ssh-keygen missing: apt-get install openssh-server")
    with SSHD(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    """``python -m runform.testing.sshd``: run one sshd until Ctrl-C, printing how to reach it."""
    import argparse
    import tempfile

    p = argparse.ArgumentParser(
        prog="python -m runform.testing.sshd",
        description="Run Debian's OpenSSH sshd on 127.0.0.1 with throw-away host and user keys, "
        "logging in as you, until Ctrl-C. Prints a spec `compute` block for the ssh provider. "
        "For an offline Vast rehearsal (stand-in + sshd) use `python -m runform.testing.rehearse`.")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--dir", help="where its keys, config and log go (default: a temp dir)")
    a = p.parse_args(argv)
    if not SSHD.available():
        print(f"error: {SSHD_BIN} or ssh-keygen is missing (fix: apt-get install openssh-server)")
        return 1
    from runform.testing.serve import until_stopped

    with tempfile.TemporaryDirectory(prefix="runform-sshd-") as tmp, SSHD(Path(a.dir or tmp), port=a.port) as s:
        print(f"sshd listening on {s.host}:{s.port} (user {s.user}, key {s.key_file}); Ctrl-C stops it")
        print("compute:\n" + "".join(f"  {k}: {v}\n" for k, v in s.compute.items()), flush=True)
        until_stopped()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
