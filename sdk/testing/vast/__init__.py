"""A faithful local stand-in for the Vast.ai REST API (``runform.testing.vast``).

It serves the endpoints runform and the official ``vastai`` SDK/CLI use (search offers,
create, list v0/v1, show, destroy, label/stop, per-instance SSH keys, logs) with the real JSON
and error shapes, over a seeded catalogue of offers, with clock-driven instance lifecycles
whose SSH endpoint is a real sshd (or an SSH banner port), and with fault injection::

    from runform.testing.vast import VastStandIn

    with VastStandIn(seed=1) as vast:
        os.environ.update(vast.env())          # VAST_API_URL, VAST_API_KEY
        vast.set_faults(rate_429=0.3, lost_create_rate=0.1)
        ...
        assert not vast.audit().live

From a shell: ``python -m runform.testing.vast --port 8765 --rate-429 0.2``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from runform.testing.vast.audit import Audit, CreateRecord, RequestRecord
from runform.testing.vast.catalogue import generate_offers
from runform.testing.vast.faults import Faults, Lifecycle
from runform.testing.vast.server import BannerServer, serve
from runform.testing.vast.world import World

__all__ = ["Audit", "CreateRecord", "Faults", "Lifecycle", "RequestRecord", "VastStandIn"]

DEFAULT_API_KEY = "standin-vast-key"


class VastStandIn:
    """The stand-in server. ``start()`` (or ``with``) binds a free port on 127.0.0.1.

    :param ssh_host, ssh_port, ssh_user: where instances' SSH endpoints point (a real sshd);
        when absent, a port that answers with an SSH banner.
    :param authorized_keys: the sshd's authorized_keys file; keys attached to live instances
        are written there and removed when the instance goes.
    :param root_dir: where each instance gets its own folder (the stand-in's; never in its JSON).

    Faithful by default: rows in Vast's published shape only (``schemas/``), the v0 list
    answers 410 (``Faults(legacy_account=True)`` for an old account), no ``Retry-After``.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        n_offers: int = 120,
        api_key: str = DEFAULT_API_KEY,
        lifecycle: Lifecycle | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssh_host: str | None = None,
        ssh_port: int | None = None,
        ssh_user: str | None = None,
        authorized_keys: str | Path | None = None,
        root_dir: str | Path | None = None,
    ) -> None:
        self.api_key = api_key
        self._own_root = root_dir is None
        self.root_dir = Path(root_dir) if root_dir else Path(tempfile.mkdtemp(prefix="vast-standin-"))
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self._banner = None if ssh_port else BannerServer(host)
        self.world = World(
            seed=seed, n_offers=n_offers, lifecycle=lifecycle, faults=faults,
            ssh_host=ssh_host or host, ssh_port=ssh_port or self._banner.port,  # type: ignore[union-attr]
            ssh_user=ssh_user, authorized_keys=Path(authorized_keys) if authorized_keys else None,
            root_dir=self.root_dir,
        )
        self._server = serve(self.world, api_key, host, port)
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.world.base_url = self.url
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifetime
    def start(self) -> VastStandIn:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="vast-standin", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        if self._banner is not None:
            self._banner.close()
        if self._own_root:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> VastStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control
    def env(self) -> dict[str, str]:
        """``VAST_API_URL`` and ``VAST_API_KEY`` pointing at this stand-in."""
        return {"VAST_API_URL": self.url, "VAST_API_KEY": self.api_key}

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (``faults``) or change some fields (``rate_429=0.3``)."""
        with self.world.lock:
            self.world.faults = attrs.evolve(faults or self.world.faults, **changes)
            return self.world.faults

    def clear_faults(self) -> None:
        self.set_faults(Faults())

    def set_lifecycle(self, **changes: Any) -> Lifecycle:
        """Change phase durations (``created_s``, ``loading_s``, ``destroy_s``, ``logs_delay_s``)."""
        with self.world.lock:
            self.world.lifecycle = attrs.evolve(self.world.lifecycle, **changes)
            return self.world.lifecycle

    def preempt(self, instance_id: int | str, mode: str = "gone") -> None:
        """Take an instance away: ``gone``, ``exited``, ``offline`` or ``stopped`` (outbid)."""
        self.world.preempt(int(instance_id), mode)

    def reboot(self, instance_id: int | str) -> None:
        """Restart an instance: ``loading`` again for the lifecycle's ``loading_s``, then running."""
        self.world.reboot(int(instance_id))

    def audit(self) -> Audit:
        return self.world.audit()

    def offers(self) -> list[dict[str, Any]]:
        """The catalogue as stored (``dph_total`` is added per search)."""
        with self.world.lock:
            return [dict(o) for o in self.world.offers.values()]

    def add_offer(self, **fields: Any) -> dict[str, Any]:
        """Put one offer on the market: a catalogue offer with ``fields`` changed (its own id
        and machine unless given)."""
        with self.world.lock:
            offer = self._offer(len(self.world.offers), fields)
            self.world.offers[offer["id"]] = offer
            return dict(offer)

    def set_offers(self, offers: list[Mapping[str, Any]]) -> None:
        """Replace the market with exactly ``offers`` (each built like :meth:`add_offer`)."""
        with self.world.lock:
            built = [self._offer(i, fields) for i, fields in enumerate(offers)]
            self.world.offers = {o["id"]: o for o in built}

    def _offer(self, n: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        existing = list(self.world.offers.values())
        template = dict(existing[0] if existing else generate_offers(0, 1)[0])
        offer_id = 90_000_000 + n
        while offer_id in self.world.offers:
            offer_id += 1_000
        template.update(id=offer_id, ask_contract_id=offer_id, machine_id=90_000 + n,
                        rented=False, rentable=True, vanished=False)
        template.update(fields)
        if "reliability" in fields and "reliability2" not in fields:
            template["reliability2"] = fields["reliability"]
        return template

    def instance_root(self, instance_id: int | str) -> Path:
        """Where the instance's onstart sentinel goes: the ``RUNFORM_ROOT`` its create asked
        for, else the stand-in's own folder for it."""
        inst = self.world.instances[int(instance_id)]
        return Path(inst.env.get("RUNFORM_ROOT") or inst.root)

    @property
    def contract_violations(self) -> list[str]:
        """Replies this stand-in gave that broke Vast's published schemas (should be none)."""
        with self.world.lock:
            return list(self.world.contract_violations)
