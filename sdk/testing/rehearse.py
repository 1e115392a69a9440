"""``python -m runform.testing.rehearse``: an offline Vast rehearsal in one command.

Starts runform's Vast API stand-in and a real OpenSSH sshd on 127.0.0.1 that its instances are
reached through (attached keys go to that sshd's authorized_keys; each instance gets its own
folder), prints the environment to export, and stops both on Ctrl-C (or SIGTERM):

    $ python -m runform.testing.rehearse
    export VAST_API_URL=http://127.0.0.1:40123
    export VAST_API_KEY=standin-vast-key
    # ready: runform plan / apply / destroy with provider: vast now rent from the stand-in
    $ export VAST_API_URL=... VAST_API_KEY=...     # in another shell
    $ runform apply

Nothing leaves 127.0.0.1; no money is spent. Needs ``openssh-server`` (``/usr/sbin/sshd``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runform.testing.rehearse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="the stand-in's port (0: a free one)")
    p.add_argument("--dir", help="where the sshd's keys and the instances' folders go (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0, help="the market's randomness")
    p.add_argument("--created-s", type=float, default=2.0, help="seconds an instance stays 'created'")
    p.add_argument("--loading-s", type=float, default=5.0, help="seconds an instance stays 'loading'")
    a = p.parse_args(argv)

    from runform.testing.sshd import SSHD
    from runform.testing.vast import Lifecycle, VastStandIn

    if not SSHD.available():
        print("error: /usr/sbin/sshd or ssh-keygen is missing (fix: apt-get install openssh-server)",
              file=sys.stderr)
        return 1
    done = threading.Event()
    # SIGINT too: a shell that starts it in the background (`... &`) leaves SIGINT ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: done.set())
    with tempfile.TemporaryDirectory(prefix="runform-rehearse-") as tmp:
        base = Path(a.dir) if a.dir else Path(tmp)
        with SSHD(base / "sshd") as sshd, VastStandIn(
                seed=a.seed, port=a.port, root_dir=base / "instances",
                lifecycle=Lifecycle(created_s=a.created_s, loading_s=a.loading_s),
                ssh_host=sshd.host, ssh_port=sshd.port, ssh_user=sshd.user,
                authorized_keys=sshd.authorized_keys) as vast:
            for k, v in vast.env().items():
                print(f"export {k}={v}")
            print(f"# ready: Vast stand-in at {vast.url}, instances reached through sshd on "
                  f"{sshd.host}:{sshd.port}; Ctrl-C stops both", flush=True)
            try:
                done.wait()
            except KeyboardInterrupt:
                pass
            print("# stopping the stand-in and sshd", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
