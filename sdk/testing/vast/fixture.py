"""pytest fixtures for the Vast stand-in (loaded through runform's pytest plugin).

- ``vast_standin``: a running stand-in with fast lifecycles (0.05 s created, 0.1 s loading),
  no faults, instances pointing at an SSH banner port. Use ``.url``, ``.api_key``,
  ``.env()``, ``.audit()``, ``.set_faults(...)``, ``.preempt(id)``.
- ``make_vast_standin(**kwargs)``: start one with other settings (any ``VastStandIn``
  argument), e.g. instances reached through the real sshd fixture: ``make_vast_standin(sshd=sshd)``
  (its host, port, user and authorized_keys). Every stand-in it starts is stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runform.testing.vast import Lifecycle, VastStandIn

FAST = Lifecycle(created_s=0.05, loading_s=0.1, destroy_s=0.0, logs_delay_s=0.05)


@pytest.fixture
def make_vast_standin(tmp_path: Path) -> Iterator[Callable[..., VastStandIn]]:
    started: list[VastStandIn] = []

    def make(*, sshd: Any = None, **kwargs: Any) -> VastStandIn:
        if sshd is not None:  # runform.testing.sshd.SSHD (or anything with the same fields)
            kwargs.update(ssh_host=sshd.host, ssh_port=sshd.port, ssh_user=sshd.user,
                          authorized_keys=sshd.authorized_keys)
        kwargs.setdefault("lifecycle", FAST)
        kwargs.setdefault("root_dir", tmp_path / f"vast-standin-{len(started)}")
        standin = VastStandIn(**kwargs).start()
        started.append(standin)
        return standin

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture
def vast_standin(make_vast_standin: Callable[..., VastStandIn]) -> VastStandIn:
    return make_vast_standin()
