"""runform's plugin hooks: every hook a plugin may implement, in one place.

A plugin is a module or object with functions marked ``@runform.hookimpl`` and named
after the specs below. Plugins are found through the ``runform`` entry point group;
built-ins are registered the same way. Registration hooks receive a ``register``
callback so that runform owns names and duplicates (after ``llm``)::

    import runform

    @runform.hookimpl
    def runform_register_trackers(register):
        register("mytracker", MyTracker)   # MyTracker(config, ctx) -> Tracker

Typed after tox's ``tox.plugin.spec``: each spec's signature is the contract, and a test checks
that each hook below is documented with its exact signature in ``docs/plugins.md``.

**Failure policy.** A registration hook that raises marks its plugin broken (``runform
plugins`` shows the error; its names are not registered; the other plugins work). The policy
hook (``runform_check_plan``) raises into the command, and a reason it returns stops the apply.
*Event hooks* (:data:`EVENT_HOOKS`) only observe: runform calls each plugin's
implementation on its own (:meth:`runform.plugins.PluginManager.notify`, the one place this is
implemented); an implementation that raises is reported as a warning naming the plugin and the
hook, and stops neither the command nor the other plugins' implementations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from runform.execution.executor import ApplyResult, Outcome
    from runform.planning.model import Action, Plan

PROJECT = "runform"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]
EVENT_HOOKS = frozenset({"runform_plan_ready", "runform_action_started", "runform_action_finished",
                         "runform_stage_metrics", "runform_apply_finished"})


@hookspec
def runform_register_providers(register: Register) -> None:
    """Register GPU providers: ``register(name, factory)``; ``factory()`` returns a Provider.

    :param register: callback taking the provider name (the spec's ``compute.provider``) and a
        zero-argument factory.
    """


@hookspec
def runform_register_storage_backends(register: Register) -> None:
    """Register storage backends: ``register(scheme, factory)``; ``factory()`` returns a StorageBackend.

    :param register: callback taking a URI scheme (``s3``, ``b2``, ``file``, ...) and a factory.
    """


@hookspec
def runform_register_trackers(register: Register) -> None:
    """Register trackers: ``register(kind, factory)``; ``factory(config, ctx)`` returns a Tracker.

    :param register: callback taking the spec's ``tracker.kind`` and a factory receiving the
        ``tracker`` block and a :class:`runform.interfaces.TrackerContext`.
    """


@hookspec
def runform_register_state_backends(register: Register) -> None:
    """Register state backends: ``register(scheme, factory)``; ``factory(url, spec_dir)`` returns a
    StateBackend.

    :param register: callback taking a scheme (``local``, ``s3``, ``b2``) and a factory.
    """


@hookspec
def runform_plan_ready(plan: Plan) -> None:
    """Called once a plan is computed, before it is shown or applied.

    :param plan: the :class:`runform.planning.model.Plan`.
    """


@hookspec
def runform_check_plan(plan: Plan) -> str | None:
    """Policy: return a reason to reject the plan (over budget, forbidden GPU), or None.

    :param plan: the :class:`runform.planning.model.Plan` just made (by plan, apply or destroy).
    """


@hookspec
def runform_action_started(action: Action) -> None:
    """Called when apply starts an action.

    :param action: the :class:`runform.planning.model.Action`.
    """


@hookspec
def runform_action_finished(action: Action, outcome: Outcome) -> None:
    """Called when an action ends, successfully or not.

    :param action: the :class:`runform.planning.model.Action`.
    :param outcome: the :class:`runform.execution.executor.Outcome` (status, duration, error).
    """


@hookspec
def runform_stage_metrics(stage: str, metrics: dict[str, float], step: int | None) -> None:
    """Called with each metrics record a stage produced.

    :param stage: the stage name.
    :param metrics: numeric metrics.
    :param step: the step the stage reported, if any.
    """


@hookspec
def runform_apply_finished(result: ApplyResult) -> None:
    """Called when apply (or destroy) ends, also on failure.

    :param result: the :class:`runform.execution.executor.ApplyResult`.
    """
