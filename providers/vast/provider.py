"""VastProvider: runform's Provider (and SupportsOffers) for the Vast.ai marketplace.

- ``find``: ``GET /api/v1/instances/`` filtered by label on the server (paged), plus the
  provider's own record of create calls (:mod:`~runform.providers.vast.ledger`): an instance a
  create made that the lagging list does not show yet is shown directly, and a create whose
  answer never came is waited for. When several instances carry the label, the extra ones are
  named in ``attrs["duplicates"]`` (the plan names them; apply destroys them).
- ``create``: the label is the idempotency key. An instance that already carries it is
  adopted; a create whose answer was lost is found by label before anything is retried; a
  ``new_contract`` that came with a failure is destroyed; a vanished offer moves on to the
  next one; an offer that reads as gone right after a lost create sends runform back to the
  label first (the lost create probably took it). Each instance gets its own ed25519 key
  (``<state_dir>/keys/<label>``). Ready = ``running`` + an SSH endpoint +
  :meth:`VastProvider.on_ready` (SSH handshake and the onstart sentinel), under
  ``ready_timeout`` (default 20 min). A failed attempt is destroyed, confirmed gone and its
  host excluded before the next offer is tried; any other error (an API error, a raising
  ``on_ready``, Ctrl-C) destroys the instance too and is then raised. When ``create`` raises
  anything after sending a create call, it first sweeps the label: every live instance that
  carries it (one a lost create made, say) is destroyed and confirmed gone.
- ``destroy``: ``DELETE``, never stop, confirmed by reading the instance back; every live
  instance carrying the run's label goes, not just the one in state.

This module stays cheap to import: httpx, tenacity, rich, cryptography and the SSH
transport are imported on first use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from runform.durations import format_duration
from runform.errors import HostKeyError, ProviderError
from runform.interfaces import InstanceInfo, Machine, ProviderContext
from runform.providers.vast import keys, reach
from runform.providers.vast.config import DEFAULT_ROOT, VastCompute, image_problem
from runform.providers.vast.gpu_names import same_gpu
from runform.providers.vast.instances import VastInstance, failure_reason
from runform.providers.vast.ledger import CreateLedger
from runform.providers.vast.offers import (
    Offer,
    broad_query,
    build_query,
    explain_empty,
    offer_rows,
    rank,
)
from runform.providers.vast.reach import ssh_banner

__all__ = ["AttemptFailed", "VastProvider", "ssh_banner"]

if TYPE_CHECKING:  # pragma: no cover
    from runform.providers.vast.client import VastClient


from runform.providers.vast.renting import AttemptFailed, Renting


class VastProvider(Renting):
    """Rents Vast.ai instances. ``VastProvider()`` reads ``VAST_API_KEY``/``VAST_API_URL``.

    :param client: a ready :class:`~runform.providers.vast.client.VastClient` (tests, embedding).
    :param poll_initial: first pause between status polls; it grows ×1.5 up to ``poll_max``.
    :param lost_create_grace: how long a create whose answer was lost is looked for by label
        before the create is tried again.
    :param destroy_timeout: how long ``destroy`` waits for the instance to read back as gone.
    :param on_ready: replaces :meth:`on_ready` (the readiness probe of a running instance).
    :param bootstrap: ``connect`` installs runform's agent (runform.agent.install);
        ``wheel``/``cache_dir`` are passed to it.
    """

    name = "vast"

    #: Default seconds a create whose answer never came is waited for in the (lagging) list,
    #: counted from when it was sent (``RUNFORM_VAST_SETTLE_S`` overrides it).
    DEFAULT_SETTLE_S = 30.0

    def __init__(
        self,
        *,
        client: VastClient | None = None,
        poll_initial: float = 0.25,
        poll_max: float = 10.0,
        lost_create_grace: float = 5.0,
        destroy_timeout: float = 120.0,
        on_ready: Callable[[InstanceInfo], bool] | None = None,
        bootstrap: bool = True,
        wheel: Any = None,
        cache_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        settle_s: float | None = None,
    ) -> None:
        self._client = client
        if settle_s is None:
            try:
                settle_s = float(os.environ.get("RUNFORM_VAST_SETTLE_S") or self.DEFAULT_SETTLE_S)
            except ValueError:
                settle_s = self.DEFAULT_SETTLE_S
        self.settle_s = settle_s
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.lost_create_grace = lost_create_grace
        self.destroy_timeout = destroy_timeout
        if on_ready is not None:
            self.on_ready = on_ready  # type: ignore[method-assign,assignment]  # a per-instance override
        self.bootstrap = bootstrap
        self._wheel = wheel
        self._cache_dir = cache_dir
        self._sleep = sleep
        self._host_keys: dict[str, str] = {}  # endpoint -> host key learned by on_ready

    @staticmethod
    def validate_compute(compute: Mapping[str, Any]) -> None:
        """Check a spec's ``compute`` block before anything runs (called when the spec loads).
        Raises ProviderError with ``field`` (the path under ``compute``) set."""
        if int(compute.get("nodes") or 1) > 1:
            err = ProviderError(
                f"nodes: {compute['nodes']}: Vast instances share no private network, so torchrun's "
                "rendezvous and NCCL/gloo traffic between them would cross the public internet through "
                "per-instance port mappings (and SkyPilot and dstack both list multi-node on Vast as "
                "unsupported)",
                hint="use `nodes: 1` with more GPUs (`num_gpus`), or an ssh fleet (`provider: ssh`, "
                "`hosts:`) of machines on one private network; see docs/multinode.md")
            err.field = ("nodes",)  # type: ignore[attr-defined]
            raise err
        image = compute.get("image")
        if isinstance(image, str) and image:
            problem = image_problem(image)
            if problem:
                err = ProviderError(problem, hint=f"name a tag, e.g. image: {image}:latest (better: a fixed version)")
                err.field = ("image",)  # type: ignore[attr-defined]
                raise err

    @property
    def client(self) -> VastClient:
        if self._client is None:
            from runform.providers.vast.client import VastClient

            self._client = VastClient()
        return self._client

    # ------------------------------------------------------------------ offers
    def offers(self, compute: Mapping[str, Any], ctx: ProviderContext | None = None) -> list[Mapping[str, Any]]:
        """The offers a plan would choose from, best first (``chosen`` marks the first).

        Raises ProviderError ``no feasible offer: ...`` saying which filter removed how many.
        """
        cfg = VastCompute.from_compute(compute)
        return offer_rows(self.search(cfg), cfg)

    def render_offers(self, rows: list[Mapping[str, Any]]) -> Any:
        """The table `runform offers` prints (a rich renderable), the chosen offer marked."""
        from runform.providers.vast.offers import render_table

        return render_table(rows, title="Vast offers, best first")

    def search(self, cfg: VastCompute, *, exclude_machines: Iterable[int] = ()) -> list[Offer]:
        """Ranked feasible offers: a server-side filtered search, re-checked here."""
        excluded = set(exclude_machines)
        found = [Offer.from_json(o) for o in self.client.search_offers(build_query(cfg))]
        ranked = rank(found, cfg, exclude_machines=excluded)
        if not ranked:
            everything = [Offer.from_json(o) for o in self.client.search_offers(broad_query(cfg))]
            raise ProviderError(explain_empty(everything, cfg, exclude_machines=excluded),
                                hint="relax compute.gpus, min_reliability, min_cuda, disk_gb, "
                                     "max_duration or max_price_per_hour")
        return ranked

    # ------------------------------------------------------------------ refresh
    def find(self, labels: Iterable[str], ctx: ProviderContext) -> dict[str, InstanceInfo]:
        """The live instance for each of ``labels`` (:meth:`_instances_for`); when several
        carry one label, the best is returned and the others are listed in
        ``attrs["duplicates"]`` (ids; each bills until destroyed)."""
        wanted = list(dict.fromkeys(labels))
        if not wanted:
            return {}
        listed: dict[str, list[VastInstance]] = {label: [] for label in wanted}
        rows = self.client.list_instances(label=wanted[0]) if len(wanted) == 1 else \
            self.client.list_instances(labels=wanted)
        for inst in (VastInstance.from_json(r) for r in rows):
            if inst.label in listed:
                listed[inst.label].append(inst)
        out: dict[str, InstanceInfo] = {}
        for label in wanted:
            found = self._instances_for(label, ctx, listed=listed[label])
            if not found:
                continue
            best = self._best(found)
            info = best.to_info(root=DEFAULT_ROOT, key_file=self._key_file(ctx, label))
            others = sorted(i.id for i in found if i.id != best.id)
            if others:
                info = attrs.evolve(info, attrs={**info.attrs, "duplicates": others})
            out[label] = info
        return out

    def _instances_for(self, label: str, ctx: ProviderContext,
                       listed: list[VastInstance] | None = None) -> list[VastInstance]:
        """Every live instance carrying ``label``: the (server-filtered) list, plus what the
        create record names that the list does not show yet. While a create whose answer never
        came is younger than ``settle_s`` and not matched by an instance the record does not
        name, the list is polled again. The record is then pruned (see ledger)."""
        ledger = CreateLedger(ctx.state_dir, label)
        pause = self.poll_initial
        while True:
            entries = ledger.load()
            shown = {i.id: i for i in (self._with_label(label) if listed is None else listed)}
            listed = None  # polled again: a fresh list call
            if not entries:
                return list(shown.values())
            found = dict(shown)
            gone: set[int] = set()
            for e in entries:
                iid = e["instance"]
                if iid is None or iid in found or iid in gone:
                    continue
                row = self.client.show_instance(iid)
                inst = VastInstance.from_json(row) if row is not None else None
                if inst is not None and inst.label == label:
                    found[iid] = inst
                else:
                    gone.add(iid)
            known = {e["instance"] for e in entries if e["instance"] is not None}
            unknown = [e["sent"] for e in entries if e["instance"] is None]
            unmatched = len(unknown) - sum(1 for i in found if i not in known)
            due = max(unknown, default=0.0) + self.settle_s
            now = time.time()
            if unmatched > 0 and now < due:
                self._sleep(min(pause, due - now))
                pause = min(pause * 1.5, self.poll_max)
                continue
            ledger.save([e for e in entries if e["instance"] is not None
                         and e["instance"] not in gone and e["instance"] not in shown])
            return list(found.values())

    @staticmethod
    def _best(found: list[VastInstance]) -> VastInstance:
        """Of several instances with one label (should not happen): a healthy one, oldest first."""
        return sorted(found, key=lambda i: (i.failure() is not None, i.id))[0]

    def _with_label(self, label: str) -> list[VastInstance]:
        """The live instances the list shows with ``label`` (filtered by the server, checked here)."""
        return [i for i in (VastInstance.from_json(r) for r in self.client.list_instances(label=label))
                if i.label == label]

    @staticmethod
    def _key_file(ctx: ProviderContext, label: str) -> str | None:
        path = keys.key_path(ctx.state_dir, label)
        return str(path) if path.is_file() else None

    # ------------------------------------------------------------------ create
    def on_ready(self, instance: InstanceInfo) -> bool:
        """Whether a running instance is usable: True ends the wait, False polls again.

        The default (:func:`~runform.providers.vast.reach.probe`) opens an SSH session with the
        instance's key and checks the onstart sentinel ``<root>/.runform/vast/onstart.done``;
        the host key it sees is returned in ``attrs["host_key"]`` (trust on first use). Without
        runform.providers.ssh it only checks that the port answers with an SSH banner. Pass
        ``on_ready=`` (or subclass) to change it. Raise :class:`AttemptFailed` to fail the
        attempt (the instance is destroyed and another host tried); any other exception
        destroys the instance and ends ``create`` with that exception.
        """
        ok, host_key = reach.probe(instance.attrs)
        if ok and host_key:
            self._host_keys[reach.endpoint(instance.attrs)] = host_key
        return ok

    # ------------------------------------------------------------------ destroy
    def destroy(self, instance: InstanceInfo, ctx: ProviderContext) -> None:
        """Delete the instance (never stop: a stopped instance still bills storage) and every
        other live instance carrying its label, confirming each is gone.

        The label is runform's idempotency key, so any instance with it is this run's: a
        duplicate left by a create whose answer was lost (while Vast's list lagged) goes too.
        An instance the list does not show yet cannot be found here (``create`` adopts it, and
        destroys duplicates, the next time)."""
        first = int(instance.id)
        self._discard(first)
        gone = [first]
        if instance.label:  # never match every unlabelled instance on the account
            for other in self._instances_for(instance.label, ctx):
                if other.id not in gone:
                    ctx.log(f"vast: instance {other.id} also carries label {instance.label}; destroying it")
                    self._discard(other.id)
                    gone.append(other.id)
            CreateLedger(ctx.state_dir, instance.label).clear()
        keys.remove_keypair(ctx.state_dir, instance.label)
        ctx.log(f"vast: instance{'s' if len(gone) > 1 else ''} {', '.join(map(str, gone))} destroyed")

    def _discard(self, instance_id: int) -> None:
        """DELETE, then read back until gone; re-sends the DELETE once if it lingers."""
        self.client.destroy_instance(instance_id)
        deadline = time.monotonic() + self.destroy_timeout
        resend = time.monotonic() + self.destroy_timeout / 2
        pause = self.poll_initial
        while self.client.show_instance(instance_id) is not None:
            now = time.monotonic()
            if now >= deadline:
                waited = format_duration(self.destroy_timeout)
                raise ProviderError(f"instance {instance_id} still exists {waited} after DELETE; it may still bill",
                                    hint=f"check it and run `runform destroy` again "
                                         f"(or `vastai destroy instance {instance_id}`)")
            if now >= resend:
                self.client.destroy_instance(instance_id)
                resend = deadline
            self._sleep(min(pause, deadline - now))
            pause = min(pause * 1.5, self.poll_max)

    # ------------------------------------------------------------------ connect and diff
    def connect(self, instance: InstanceInfo, ctx: ProviderContext) -> Machine:
        """An SSH transport to the instance (its per-instance key, the host key pinned in
        ``ctx.pins`` under ``host:port`` or learned at readiness) with runform's agent installed."""
        a = dict(instance.attrs)
        if not a.get("ssh_host") or not a.get("ssh_port"):
            row = self.client.show_instance(int(instance.id))
            if row is None:
                raise ProviderError(f"instance {instance.id} is gone", hint="run `runform apply` to replace it")
            a.update(VastInstance.from_json(row).to_info(root=a.get("root") or DEFAULT_ROOT,
                                                         user=a.get("ssh_user") or "root",
                                                         key_file=a.get("key_file")).attrs)
        a["key_file"] = a.get("key_file") or self._key_file(ctx, instance.label)
        if not a["key_file"]:
            raise ProviderError(f"no SSH key for instance {instance.id} under {ctx.state_dir / 'keys'}",
                                hint="run `runform apply` to replace the instance")
        # only the pin in state counts: after `--accept-host-key` it is gone, and the key this
        # connection is shown gets pinned (ctx.pin); the attrs' host_key is history
        transport = self._open(a, ctx)
        root = str(a.get("root") or DEFAULT_ROOT)
        if not self.bootstrap:
            return Machine(transport=transport, root=root, python="python3")
        from runform.agent.install import ensure_agent

        try:
            ctx.phase("bootstrap", "runform's agent on the machine")  # progress
            agent = ensure_agent(transport, root, python="python3", wheel=self._wheel, cache_dir=self._cache_dir,
                                 log=ctx.log)
        except BaseException:
            transport.close()
            raise
        return Machine(transport=transport, root=root, python=agent.python)

    @staticmethod
    def _open(a: Mapping[str, Any], ctx: ProviderContext) -> Any:
        """A transport to the endpoint in ``a``, falling back to the others the instance had
        (direct ⇄ proxy: the same container sshd, so the same pinned host key)."""
        endpoints = [(a.get("ssh_host"), a.get("ssh_port"))]
        endpoints += [tuple(e) for e in a.get("ssh_fallbacks") or [] if isinstance(e, list | tuple) and len(e) == 2]
        pins = [ctx.pins.get(reach.endpoint({"ssh_host": h, "ssh_port": p})) for h, p in endpoints]
        pinned = next((p for p in pins if p), None)
        for n, (host, port) in enumerate(endpoints):
            last = n == len(endpoints) - 1
            try:
                return reach.open_transport({**a, "ssh_host": host, "ssh_port": port}, pinned=pinned,
                                            retry_timeout=60.0 if last else 20.0, log=ctx.log,
                                            on_first_key=ctx.pin)
            except HostKeyError:
                raise
            except Exception as exc:
                if last:
                    raise
                ctx.log(f"vast: SSH to {host}:{port} failed ({exc}); trying {endpoints[n + 1][0]}:{endpoints[n + 1][1]}")
        raise ProviderError("instance has no SSH endpoint", hint="run `runform apply` to replace it")

    def replace_reason(self, instance: InstanceInfo, compute: Mapping[str, Any]) -> str | None:
        """Why ``instance`` must be replaced: it failed or is gone, or ``compute`` changed."""
        a = instance.attrs
        reason = failure_reason(instance.id, instance.status, str(a.get("status_msg") or ""))
        if reason:
            return reason
        cfg = VastCompute.from_compute(compute)
        gpu = a.get("gpu_name")
        if gpu and not any(same_gpu(str(gpu), g) for g in cfg.gpus):
            return f"gpu {gpu} is not in gpus [{', '.join(cfg.gpus)}]"
        if a.get("num_gpus") is not None and int(a["num_gpus"]) != cfg.num_gpus:
            return f"num_gpus changed: {a['num_gpus']} → {cfg.num_gpus}"
        if a.get("image") and a["image"] != cfg.image:
            return f"image changed: {a['image']} → {cfg.image}"
        if a.get("disk_gb") is not None and float(a["disk_gb"]) != cfg.disk_gb:
            return f"disk_gb changed: {float(a['disk_gb']):g} → {cfg.disk_gb:g} (disk is fixed at create)"
        return None

