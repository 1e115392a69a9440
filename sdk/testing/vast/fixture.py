"""pytest fixtures for the Vast stand-in (loaded through runform's pytest plugin).

- ``vast_standin``: a running stand-in with fast lifecycles (0.05 s created, 0.1 s loading),
  no faults, instances pointing at an SSH banner port. A test fails if any reply broke
  Vast's published schemas (``runform.testing.vast.contract``). Use ``.url``, ``.api_key``,
  ``.env()``, ``.audit()``, ``.set_faults(...)``, ``.preempt(id)``.
- ``make_vast_standin(**kwargs)``: start one with other settings (any ``VastStandIn``
  argument), e.g. instances reached through the real sshd fixture: ``make_vast_standin(sshd=sshd)``
  (its host, port, user and authorized_keys). Every stand-in it starts is stopped after the test.
- ``vast_provider``: a :class:`~runform.providers.vast.provider.VastProvider` talking to
  ``vast_standin`` with test-speed retries and polls (:func:`fast_provider` builds others).
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
    broken = [v for standin in started for v in standin.contract_violations]
    assert not broken, "the Vast stand-in broke the published API schemas:\n" + "\n".join(broken[:20])


@pytest.fixture
def vast_standin(make_vast_standin: Callable[..., VastStandIn]) -> VastStandIn:
    return make_vast_standin()


def fast_provider(standin: VastStandIn, **kwargs: Any) -> Any:
    """A VastProvider wired to ``standin`` with test-speed retries and polls.

    Readiness is the SSH-banner check unless ``on_ready=`` is given (the stand-in's default
    SSH endpoint is a banner port, not an sshd); pass ``on_ready=None`` for the real SSH probe.
    """
    from runform.providers.vast.client import RetryPolicy, VastClient
    from runform.providers.vast.provider import VastProvider, ssh_banner

    client = VastClient(api_key=standin.api_key, base_url=standin.url,
                        retry=RetryPolicy(attempts=12, initial=0.001, max_wait=0.01, max_retry_after=5.0))
    kwargs.setdefault("on_ready", lambda info: ssh_banner(str(info.attrs["ssh_host"]), int(info.attrs["ssh_port"])))
    kwargs.setdefault("poll_initial", 0.01)
    kwargs.setdefault("poll_max", 0.05)
    kwargs.setdefault("lost_create_grace", 0.0)
    kwargs.setdefault("destroy_timeout", 10.0)
    kwargs.setdefault("settle_s", 0.0)  # no crash-recovery waits unless a test asks for them
    return VastProvider(client=client, **kwargs)


@pytest.fixture
def vast_provider(vast_standin: VastStandIn) -> Iterator[Any]:
    """A VastProvider talking to ``vast_standin`` (see :func:`fast_provider`)."""
    provider = fast_provider(vast_standin)
    yield provider
    provider.client.close()
