"""Renting a Vast.ai instance (:meth:`Renting.create`, mixed into
:class:`~runform.providers.vast.provider.VastProvider`): offers tried in rank order, each create
journaled in the ledger before it is sent, a lost answer looked for by label, a host that fails
excluded, duplicates dropped, and an instance that never comes up destroyed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
from runform.durations import format_duration
from runform.errors import ProviderError
from runform.interfaces import InstanceInfo, InstanceRequest, ProviderContext
from runform.providers.vast import keys, reach
from runform.providers.vast.config import VastCompute
from runform.providers.vast.errors import (
    AuthError,
    CreateFailed,
    CreateOutcomeUnknown,
    OfferGone,
    VastAPIError,
)
from runform.providers.vast.instances import VastInstance
from runform.providers.vast.ledger import CreateLedger
from runform.providers.vast.offers import Offer
from runform.providers.vast.onstart import build_onstart, check_env, check_onstart


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


class Renting:
    """The create path of the Vast provider (state and settings live on the provider)."""

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
                self._create_failed(exc, key, ledger, run, ctx)
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

    def _create_failed(self, exc: CreateFailed, key: float, ledger: CreateLedger, run: _Attempts,
                       ctx: ProviderContext) -> None:
        """A create that answered with a failure: destroy the instance it left, if any."""
        if exc.new_contract:
            ledger.answered(key, exc.new_contract)
        else:
            ledger.drop(key=key)
        run.unaccounted -= 1
        ctx.log(f"vast: {exc}; destroying the instance it left ({exc.new_contract})")
        run.errors.append(str(exc))
        if exc.new_contract:
            run.seen.add(exc.new_contract)
            run.deleted.add(exc.new_contract)
            self._discard(exc.new_contract)
            ledger.drop(instances={exc.new_contract})

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
