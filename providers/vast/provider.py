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

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from runform.durations import format_duration
from runform.errors import HostKeyError, ProviderError
from runform.interfaces import InstanceInfo, InstanceRequest, Machine, ProviderContext
from runform.providers.vast import keys, reach
from runform.providers.vast.config import DEFAULT_ROOT, VastCompute, image_problem
from runform.providers.vast.errors import AuthError, CreateFailed, CreateOutcomeUnknown, OfferGone, VastAPIError
from runform.providers.vast.gpu_names import same_gpu
from runform.providers.vast.instances import VastInstance, failure_reason
from runform.providers.vast.ledger import CreateLedger
from runform.providers.vast.offers import Offer, broad_query, build_query, explain_empty, offer_rows, rank
from runform.providers.vast.onstart import build_onstart, check_env, check_onstart
from runform.providers.vast.reach import ssh_banner

__all__ = ["AttemptFailed", "VastProvider", "ssh_banner"]

if TYPE_CHECKING:  # pragma: no cover
    from runform.providers.vast.client import VastClient


@attrs.define
class _Attempts:
    """Book-keeping of one ``create``: what was tried, which hosts failed, and why."""

    limit: int
    failures: int = 0
    tried: set[int] = attrs.field(factory=set)
    excluded: set[int] = attrs.field(factory=set)  # machine_ids
    errors: list[str] = attrs.field(factory=list)
    sent: int = 0  # create calls sent (PUT /asks/{id}/)
    unaccounted: int = 0  # of those, calls that may have made an instance this create never saw
    seen: set[int] = attrs.field(factory=set)  # instance ids this create learned of
    deleted: set[int] = attrs.field(factory=set)  # instance ids this create sent a DELETE for
    ledger: CreateLedger | None = None  # the durable record of the create calls sent


class AttemptFailed(ProviderError):
    """One instance did not become ready; it is destroyed and its host excluded."""

    def __init__(self, message: str, *, machine_id: int | None) -> None:
        super().__init__(message)
        self.machine_id = machine_id


class VastProvider:
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
    def create(self, request: InstanceRequest, ctx: ProviderContext) -> InstanceInfo:
        """Create (or adopt) the instance labelled ``request.label`` and wait until it is ready.

        If it raises (anything, Ctrl-C included) after sending at least one create call, every
        live instance carrying the label is destroyed first (:meth:`_sweep`): a create whose
        answer was lost may have made one that was never found. No create sent: no sweep."""
        cfg = VastCompute.from_compute(request.compute)
        run = _Attempts(limit=cfg.max_attempts, ledger=CreateLedger(ctx.state_dir, request.label))
        try:
            info = self._create(request, cfg, run, ctx)
        except BaseException as exc:
            if run.sent:
                self._sweep(request.label, run, exc, ctx)
            raise
        if run.unaccounted > 0:
            self._drop_duplicates(request.label, int(info.id), run, ctx)
        run.ledger.drop(instances=run.deleted)
        return info

    def _drop_duplicates(self, label: str, keep: int, run: _Attempts, ctx: ProviderContext) -> None:
        """After a create that succeeded although some create answer was lost: by now (the
        readiness wait took a while) a lagging list may show what the lost call made. Destroy
        every other instance with the label; never fail the create that succeeded."""
        try:
            others = [i for i in self._with_label(label) if i.id != keep and i.id not in run.deleted]
        except Exception as exc:  # noqa: BLE001 - the instance we keep is good; warn only
            ctx.log(f"vast: could not look for duplicates of {label} ({exc}); `runform destroy` removes "
                    "every instance with the label")
            return
        for inst in others:
            ctx.log(f"vast: instance {inst.id} also carries {label} (a create whose answer was lost); "
                    "destroying it")
            try:
                self._discard(inst.id)
                run.deleted.add(inst.id)
            except Exception as exc:  # noqa: BLE001 - warn with the fix
                ctx.log(f"vast: instance {inst.id} could not be destroyed ({exc}): run "
                        f"`vastai destroy instance {inst.id}` or `runform destroy`")
        if run.unaccounted > len(others):
            ctx.log(f"vast: {run.unaccounted - len(others)} create call(s) whose answer never came are still "
                    f"unaccounted for; an instance Vast's list does not show yet may carry {label}: "
                    "`runform destroy` removes every instance with the label")

    def _create(self, request: InstanceRequest, cfg: VastCompute, run: _Attempts,
                ctx: ProviderContext) -> InstanceInfo:
        label = request.label
        key_file, public_key = keys.ensure_keypair(ctx.state_dir, label)

        adopted = self._adoptable(label, ctx)  # a crash after create, or a re-run
        if adopted is not None:
            ctx.log(f"vast: adopting instance {adopted.id} (label {label}, {adopted.status})")
            info = self._up_or_discarded(adopted.id, cfg, public_key, str(key_file), run, ctx)
            if info is not None:
                return info

        body = self._create_body(request, cfg)
        for offer in self._candidates(cfg, run):
            instance_id = self._rent(offer, body, label, ctx, run)
            if instance_id is None:
                continue
            info = self._up_or_discarded(instance_id, cfg, public_key, str(key_file), run, ctx)
            if info is not None:
                return info
        raise ProviderError(f"could not rent a Vast instance for {label} ({len(run.tried)} offers tried): "
                            + ("; ".join(run.errors) or "no offers left"),
                            hint="run `runform offers` to see the market, or relax compute")

    def _adoptable(self, label: str, ctx: ProviderContext) -> VastInstance | None:
        """The instance that already carries ``label``; duplicates (never made by runform on
        purpose, but possible after a lost create) are destroyed so only one bills."""
        existing = self._instances_for(label, ctx)
        if not existing:
            return None
        keep = self._best(existing)
        extras = {extra.id for extra in existing if extra.id != keep.id}
        for extra in sorted(extras):
            ctx.log(f"vast: instance {extra} duplicates label {label} (keeping {keep.id}); destroying it")
            self._discard(extra)
        if extras:
            CreateLedger(ctx.state_dir, label).drop(instances=extras)
        return keep

    def _candidates(self, cfg: VastCompute, run: _Attempts) -> Iterator[Offer]:
        """Offers to try, best first, skipping failed hosts: one search, and a fresh one when
        those run out; ``max_offers`` in all. The first search raises "no feasible offer"."""
        for round_ in range(2):
            try:
                ranked = self.search(cfg, exclude_machines=run.excluded)
            except ProviderError:
                if round_ == 0:
                    raise
                return
            fresh = [o for o in ranked if o.id not in run.tried]
            if not fresh:
                return
            for offer in fresh:
                if len(run.tried) >= cfg.max_offers:
                    return
                if offer.machine_id not in run.excluded:
                    run.tried.add(offer.id)
                    yield offer

    def _up_or_discarded(self, instance_id: int, cfg: VastCompute, public_key: str, key_file: str,
                         run: _Attempts, ctx: ProviderContext) -> InstanceInfo | None:
        """:meth:`_bring_up` an instance that exists; None when the attempt failed (destroyed,
        host excluded: try another). Any other exception (an API error, an ``on_ready`` that
        raised, Ctrl-C) destroys the instance and is then raised: nothing that ``create`` does
        not hand back is left billing."""
        try:
            return self._bring_up(instance_id, cfg, public_key, key_file, phase=ctx.phase)
        except AttemptFailed as exc:
            self._failed(exc, instance_id, run, ctx)
            return None
        except BaseException as exc:
            run.deleted.add(instance_id)
            self._abandon(instance_id, exc, ctx)
            raise

    def _abandon(self, instance_id: int, exc: BaseException, ctx: ProviderContext) -> None:
        """Destroy (confirmed) an instance that ``create`` will not hand back because of
        ``exc``. A cleanup that fails is logged (and noted on ``exc`` where Python can) but not
        raised: the caller raises ``exc``. A second Ctrl-C during the cleanup does propagate."""
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        ctx.log(f"vast: {what} while instance {instance_id} was starting; destroying it")
        try:
            self._discard(instance_id)
        except Exception as cleanup:  # noqa: BLE001  any cleanup failure is reported; the caller raises exc
            note = (f"instance {instance_id} could not be confirmed destroyed ({cleanup}); it may still bill: "
                    f"check it and run `vastai destroy instance {instance_id}`")
            ctx.log(f"vast: {note}")
            add_note = getattr(exc, "add_note", None)  # Python 3.11+
            if add_note is not None:
                add_note(note)
        else:
            ctx.log(f"vast: instance {instance_id} destroyed")

    def _failed(self, exc: AttemptFailed, instance_id: int, run: _Attempts, ctx: ProviderContext) -> None:
        """Destroy a failed attempt (confirmed; raises if it will not go), exclude its host,
        and give up once ``max_attempts`` instances have failed."""
        ctx.log(f"vast: {exc}; destroying instance {instance_id} and trying another host")
        run.errors.append(str(exc))
        run.deleted.add(instance_id)
        self._discard(instance_id)
        if exc.machine_id is not None:
            run.excluded.add(exc.machine_id)
        run.failures += 1
        if run.failures >= run.limit:
            raise ProviderError(f"no Vast instance became ready after {run.failures} attempts: "
                                + "; ".join(run.errors),
                                hint="raise compute.ready_timeout, or try other GPUs or hosts")

    def _create_body(self, request: InstanceRequest, cfg: VastCompute) -> dict[str, Any]:
        env = {**cfg.env, **{k: str(v) for k, v in request.env.items()}}
        env.update(RUNFORM_ROOT=cfg.root, RUNFORM_RUN=request.run, RUNFORM_LABEL=request.label,
                   RUNFORM_VAST_URL=self.client.base_url)
        if cfg.max_duration_s is not None:
            env["RUNFORM_MAX_DURATION_S"] = str(int(cfg.max_duration_s))
        onstart = check_onstart(build_onstart(), self.client.secrets)
        return {
            "client_id": "me",
            "image": cfg.image,
            "disk": cfg.disk_gb,
            "label": request.label,
            "env": check_env(env),
            "onstart": onstart,
            "runtype": "ssh_direc ssh_proxy",
            "cancel_unavail": True,
            "target_state": "running",
        }

    def _rent(self, offer: Offer, body: Mapping[str, Any], label: str, ctx: ProviderContext,
              run: _Attempts) -> int | None:
        """Rent ``offer``; the new instance id, or None when this offer is out (gone, refused).

        After a create whose answer was lost, the offer reading as gone on the retry most likely
        means that lost create took it: the label is looked up again before moving on, so a
        list that lags behind does not make a second instance with the same label.

        Every create call counts in ``run.sent``, and in ``run.unaccounted`` until an answer
        (or a lookup that finds its instance) says what it made: what :meth:`_sweep` looks for."""
        ctx.log(f"vast: renting offer {offer.id} ({offer.num_gpus}x {offer.gpu_name}, "
                f"${offer.dph_total:.3f}/h, machine {offer.machine_id})")
        errors = run.errors
        lost = False  # a create on this offer may have happened without us hearing of it
        ledger = run.ledger or CreateLedger(ctx.state_dir, label)
        for _ in range(3):
            run.sent += 1
            run.unaccounted += 1  # until an answer says what this call made (Ctrl-C mid-call: never)
            key = ledger.sent(offer.id)  # on disk before the call: a crash cannot hide it
            try:
                instance_id = self.client.create_instance(offer.id, body)
                ledger.answered(key, instance_id)
                run.unaccounted -= 1
                run.seen.add(instance_id)
                return instance_id
            except OfferGone as exc:
                ledger.drop(key=key)
                run.unaccounted -= 1
                if lost:
                    ctx.log(f"vast: {exc} after a create whose answer was lost; looking for {label} again")
                    found = self._find_lost(label, run)
                    if found is not None:
                        ctx.log(f"vast: the lost create did happen: instance {found} carries {label}")
                        return found
                ctx.log(f"vast: {exc}; next offer")
                errors.append(str(exc))
                return None
            except CreateFailed as exc:
                if exc.new_contract:
                    ledger.answered(key, exc.new_contract)
                else:
                    ledger.drop(key=key)
                run.unaccounted -= 1
                ctx.log(f"vast: {exc}; destroying the instance it left ({exc.new_contract})")
                errors.append(str(exc))
                if exc.new_contract:
                    run.seen.add(exc.new_contract)
                    run.deleted.add(exc.new_contract)
                    self._discard(exc.new_contract)
                    ledger.drop(instances={exc.new_contract})
                return None
            except CreateOutcomeUnknown as exc:  # stays unaccounted until its instance is found
                lost = True
                ctx.log(f"vast: {exc}; looking for {label} before trying again")
                found = self._find_lost(label, run)
                if found is not None:
                    ctx.log(f"vast: the create did happen: instance {found} carries {label}")
                    ledger.answered(key, found)
                    return found
            except VastAPIError as exc:
                ledger.drop(key=key)
                run.unaccounted -= 1  # answered (4xx, auth, rate limited): nothing was made
                if exc.status is not None and 400 <= exc.status < 500 and exc.code != "auth_error":
                    errors.append(str(exc))  # this offer refused us (invalid_args, ...): next one
                    return None
                raise
        errors.append(f"offer {offer.id}: create answer lost 3 times")
        return None

    def _find_lost(self, label: str, run: _Attempts) -> int | None:
        """The instance a lost create made, polling the list for ``lost_create_grace`` seconds
        (instances this create already destroyed do not count). Finding one accounts for one
        lost create in ``run``."""
        deadline = time.monotonic() + self.lost_create_grace
        pause = self.poll_initial
        while True:
            found = [i for i in self._with_label(label) if i.id not in run.deleted]
            if found:
                instance_id = min(i.id for i in found)
                if instance_id not in run.seen:
                    run.seen.add(instance_id)
                    run.unaccounted -= 1
                return instance_id
            if time.monotonic() + pause > deadline:
                return None
            self._sleep(pause)
            pause = min(pause * 1.5, self.poll_max)

    def _sweep(self, label: str, run: _Attempts, exc: BaseException, ctx: ProviderContext) -> None:
        """Destroy (confirmed) every live instance carrying ``label`` before ``create`` raises
        ``exc``: whatever a create whose answer was lost made, and anything else that ``create``
        will not hand back. Instances this create already sent a DELETE for are left to that
        cleanup. While some create calls are unaccounted for (answer lost, instance never found),
        the list is polled for ``lost_create_grace`` seconds, as for a lost create, so a list
        that lags behind gets a chance to show them. A sweep that fails is logged (and noted on
        ``exc`` where Python can) but not raised: the caller raises ``exc``. A second Ctrl-C
        during the sweep does propagate."""
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        ctx.log(f"vast: create is ending with {what} after {run.sent} create call(s); "
                f"destroying any instance that carries {label}")
        swept: list[int] = []
        failed: list[str] = []
        deadline = time.monotonic() + self.lost_create_grace
        pause = self.poll_initial
        try:
            while True:
                for inst in self._with_label(label):
                    if inst.id in run.deleted or inst.id in swept:
                        continue
                    swept.append(inst.id)
                    ctx.log(f"vast: instance {inst.id} carries {label} and will not be used; destroying it")
                    try:
                        self._discard(inst.id)
                    except Exception as cleanup:  # noqa: BLE001  reported below; the caller raises exc
                        failed.append(f"instance {inst.id} ({cleanup}): run `vastai destroy instance {inst.id}`")
                    else:
                        ctx.log(f"vast: instance {inst.id} destroyed")
                hidden = run.unaccounted - sum(1 for i in swept if i not in run.seen)
                if hidden <= 0 or time.monotonic() + pause > deadline:
                    break
                self._sleep(pause)
                pause = min(pause * 1.5, self.poll_max)
        except Exception as cleanup:  # noqa: BLE001  the list call failed
            failed.append(f"the instances carrying {label} could not be listed ({cleanup}): check "
                          f"`vastai show instances` for label {label} and run `vastai destroy instance <id>`, "
                          f"or run `runform destroy`")
            hidden = 0
        if run.ledger is not None:
            with contextlib.suppress(OSError):  # the record is a help, not a must, once swept
                run.ledger.drop(instances=set(swept) | run.deleted)
        if failed:
            note = (f"instances carrying label {label} may still bill: " + "; ".join(failed))
            ctx.log(f"vast: {note}")
            add_note = getattr(exc, "add_note", None)  # Python 3.11+
            if add_note is not None:
                add_note(note)
        if hidden > 0:
            ctx.log(f"vast: {hidden} create call(s) whose answer never came are still unaccounted for; if one "
                    f"made an instance that Vast's list does not show yet, it carries label {label} and bills: "
                    f"`runform destroy` (or `vastai destroy instance <id>`) removes it")

    # ------------------------------------------------------------------ readiness
    def _bring_up(self, instance_id: int, cfg: VastCompute, public_key: str, key_file: str,
                  phase: Callable[..., None] = lambda *_: None) -> InstanceInfo:
        """Attach the key and poll until ready; AttemptFailed on a failure or the deadline.
        ``phase`` (``ProviderContext.phase``) hears each new readiness phase."""
        deadline = time.monotonic() + cfg.ready_timeout_s
        pause = self.poll_initial
        key_error: str | None = "not tried"
        phase("created", f"instance {instance_id}")  # progress (the core shows each new phase once)
        while True:
            if key_error is not None:  # attach as early as possible: keys can lag behind
                try:
                    self.client.attach_ssh_key(instance_id, public_key)
                    key_error = None
                except AuthError:
                    raise
                except VastAPIError as exc:  # not accepted yet, or already there: SSH will tell
                    key_error = str(exc)
            row = self.client.show_instance(instance_id)
            if row is None:
                raise AttemptFailed(f"instance {instance_id} disappeared while starting", machine_id=None)
            inst = VastInstance.from_json(row)
            reason = inst.failure()
            if reason:
                raise AttemptFailed(reason, machine_id=inst.machine_id)
            last = inst.status + (f": {inst.status_msg}" if inst.status_msg else "")
            now_phase = "ssh" if inst.running and inst.ssh_endpoints(cfg.ssh_via) else inst.status
            phase(now_phase, "waiting for SSH and onstart" if now_phase == "ssh" else inst.status_msg or "")
            if inst.running and inst.ssh_endpoints(cfg.ssh_via):
                # direct and proxy: each is the other's fallback (the first that answers wins)
                for endpoint in inst.ssh_endpoints(cfg.ssh_via):
                    info = inst.to_info(root=cfg.root, key_file=key_file, via=cfg.ssh_via, user=cfg.ssh_user,
                                        endpoint=endpoint)
                    if self.on_ready(info):
                        learned = self._host_keys.get(reach.endpoint(info.attrs))
                        return attrs.evolve(info, attrs={**info.attrs, "host_key": learned}) if learned else info
                last = "running, SSH not answering yet" + (f" (key not attached: {key_error})" if key_error else "")
            now = time.monotonic()
            if now >= deadline:
                raise AttemptFailed(f"instance {instance_id} not ready after {format_duration(cfg.ready_timeout_s)} "
                                    f"(last: {last})", machine_id=inst.machine_id)
            self._sleep(min(pause, deadline - now))
            pause = min(pause * 1.5, self.poll_max)

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

