"""A ``launcher: torchrun`` stage on a fleet: one detached job per node under torchrun's c10d
rendezvous, watched together.

Every node's job is started (or attached to: ``start`` is idempotent per fingerprint, so after a
client crash apply finds each node's job and re-runs none); the stage succeeds when every node's
job does. The first node whose job fails fails the stage: the others are stopped (their jobs
would wait on a rendezvous or a collective that never completes), and the error names the node
and shows its log's last lines. Metrics, images and artifacts come from the node where rank 0 ran
(torchrun's c10d rendezvous numbers the nodes itself, by address then pid; node 0 hosts the
rendezvous, not necessarily rank 0): the stage's record keeps it as ``rank0_node``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runform.graph import INSTANCE, name_of
from runform.interfaces import HasStageEnv
from runform.nodes import at_node, node_address, rendezvous
from runform.planning.model import Action
from runform.progress import Interrupted

if TYPE_CHECKING:
    from runform.execution.handlers import Handlers


def run_multinode(h: Handlers, a: Action) -> dict[str, Any]:
    """Start (or attach to) the stage's job on every node, wait for all, return its record."""
    from runform.execution.handlers import StageFailed

    name, fp = name_of(a.address), a.fingerprint
    nodes = int(a.after["inputs"]["nodes"])
    agents = {k: h.agent(k) for k in range(nodes)}
    if a.kind != "read":
        _start_all(h, a, agents)
    states = _wait_all(h, a, agents)
    failed = [k for k, st in sorted(states.items()) if not _done(a, st)]
    bad = next((k for k in failed if not states[k].get("stopped")), failed[0] if failed else None)
    metrics, with_metrics = _metrics(h, name, fp, agents)
    rank0 = _rank0_node(h, name, agents, with_metrics)
    record = {"inputs": a.after.get("inputs"), "nodes": {str(k): _brief(st) for k, st in states.items()},
              "metrics_node": with_metrics or 0, "rank0_node": rank0, "metrics": metrics.get("final") or (
                  metrics["records"][-1] if metrics.get("records") else {}), **_times(states)}
    if bad is None:
        h._forward_metrics(name, metrics)
        h._forward_images(name, metrics, node=rank0)
        return record
    st = states[bad]
    stopped = sorted(k for k, s in states.items() if k != bad and s.get("stopped"))
    why = (f"{a.address} failed on node {bad} ({at_node(INSTANCE, bad)}: exit {st.get('exit_code', '?')}, "
           f"{st['state']})" + (f"; stopped node(s) {', '.join(map(str, stopped))}" if stopped else ""))
    if h.ws.stream_logs:  # every node's lines were streamed: not printed a second time
        raise StageFailed(f"{why}; its log is above (`runform logs {name} --node {bad}`)", record)
    tail = agents[bad].call("tail", stage=name, fingerprint=fp, offset=0, limit=1 << 20)["data"]
    last = "\n".join(tail.rstrip().splitlines()[-15:])
    why += f"; `runform logs {name} --node {bad}`"
    raise StageFailed(why + (f"; last lines of node {bad}'s log:\n{h.ws.redact(last)}" if last else ""), record)


def _start_all(h: Handlers, a: Action, agents: dict[int, Any]) -> None:
    name = name_of(a.address)
    s = h.ws.spec.stages[name]
    node0 = h.state.get(INSTANCE)
    endpoint = rendezvous(h.ws.spec.compute.config, (node0.attrs.get("instance") or {}).get("attrs") if node0
                          else None, h.machine_is_local())
    rdzv_id = f"{h.ws.spec.run}-{name}-{(a.fingerprint or '').rpartition(':')[2][:12]}"
    env = dict(s.env)
    env.update(h._tracker_env())
    if isinstance(h.trk, HasStageEnv):
        env.update(h.trk.stage_env(name))
    for k, agent in agents.items():
        st = agent.call("start", stage=name, fingerprint=a.fingerprint, command=s.run, timeout=s.timeout,
                        env={**env, "RUNFORM_NODE": str(k), "RUNFORM_NODES": str(len(agents))},
                        launcher=s.launcher, nproc=s.nproc, retry_failed=a.retry_failed,
                        python=h.ws.machine(h.state, k).python,
                        multinode={"nnodes": len(agents), "node": k, "endpoint": endpoint, "rdzv_id": rdzv_id,
                                   "local_addr": node_address(h.ws.spec.compute.config, k, h.machine_is_local())})
        verb = "attached to its running job" if st.get("attached") and st["state"] == "running" else \
            "job started" if not st.get("attached") else f"its job already {st['state']}"
        pid = f"pid {st['pid']}; " if st.get("pid") else ""
        h.ws.say(f"{a.address}: node {k}: {verb} ({pid}rendezvous {endpoint}, id {rdzv_id})")


def _wait_all(h: Handlers, a: Action, agents: dict[int, Any]) -> dict[int, dict[str, Any]]:
    """Every node's final job state; the first failure stops the others' jobs."""
    from runform.execution.watchers import LogStream

    name, fp = name_of(a.address), a.fingerprint
    logs = [LogStream(h.ws, agent, a.address, name, fp, node=k) for k, agent in agents.items()] \
        if h.ws.stream_logs else []
    states: dict[int, dict[str, Any]] = {}
    wait_s = 1 if h.machine_is_local() else 5
    while True:
        for k, agent in agents.items():
            states[k] = agent.call("wait", stage=name, fingerprint=fp, timeout=wait_s if k == 0 else 0)
        for log in logs:  # every node's lines, each named by its node
            log.pump()
        failed = [k for k, st in sorted(states.items()) if st["state"] != "running" and not _done(a, st)]
        if failed:
            return _stop_others(h, a, agents, states, failed[0])
        if all(_done(a, st) for st in states.values()):
            return states
        if h.stop is not None and h.stop.is_set():
            raise Interrupted(f"{a.address}: stopped waiting; its jobs go on on every node")


def _stop_others(h: Handlers, a: Action, agents: dict[int, Any], states: dict[int, dict[str, Any]],
                 bad: int) -> dict[int, dict[str, Any]]:
    name, fp = name_of(a.address), a.fingerprint
    for k, agent in agents.items():
        if k != bad and states[k]["state"] == "running":
            h.ws.say(f"{a.address}: node {bad} failed: stopping node {k}'s job")
            states[k] = agent.call("stop", stage=name, fingerprint=fp, reason=f"node {bad} failed", grace=10)
    return states


def _metrics(h: Handlers, name: str, fp: str | None, agents: dict[int, Any]) -> tuple[dict[str, Any], int | None]:
    """The metrics of the node where rank 0 wrote them, and that node (None: no node has any)."""
    s = h.ws.spec.stages[name]
    for k, agent in agents.items():
        m = h.ws.redactor.redact_json(agent.call("metrics", stage=name, fingerprint=fp, metrics_file=s.metrics))
        if m.get("records") or m.get("final"):
            return m, k
    return {}, None


def _rank0_node(h: Handlers, name: str, agents: dict[int, Any], with_metrics: int | None) -> int:
    """The node where rank 0 ran, as its writes show: the node holding the metrics (written from
    ``RANK == 0``), else the one node holding every declared output, else node 0."""
    if with_metrics is not None:
        return with_metrics
    outputs = list(h.ws.spec.stages[name].outputs)
    if not outputs:
        return 0
    holding = [k for k, agent in agents.items()
               if all(agent.call("status", stages={}, paths=outputs, datasets={}).get("exists", {}).values())]
    return holding[0] if len(holding) == 1 else 0


def artifact_node(spec: Any, state: Any, name: str) -> int:
    """The node ``artifact.NAME`` is pushed (and pulled) from: where rank 0 ran in the latest
    multi-node stage producing its paths (its record's ``rank0_node``), else node 0."""
    from runform.graph import producers

    if spec.compute.nodes < 2 or name not in spec.artifacts:
        return 0
    for address in reversed(producers(spec, spec.artifacts[name].paths)):
        rec = state.get(address) if state is not None else None
        k = rec.attrs.get("rank0_node") if rec is not None else None
        if isinstance(k, int) and not isinstance(k, bool) and 0 <= k < spec.compute.nodes:
            return k
    return 0


def _done(a: Action, st: dict[str, Any]) -> bool:
    """A node's job that needs nothing more: it succeeded (recording a finished run: or left no
    record, on a node replaced after it)."""
    return st["state"] == "succeeded" or (a.kind == "read" and st["state"] == "none")


def _brief(st: dict[str, Any]) -> dict[str, Any]:
    return {k: st.get(k) for k in ("state", "exit_code", "started", "ended", "stopped") if st.get(k) is not None}


def _times(states: dict[int, dict[str, Any]]) -> dict[str, Any]:
    starts = [st["started"] for st in states.values() if st.get("started")]
    ends = [st["ended"] for st in states.values() if st.get("ended")]
    started, ended = (min(starts) if starts else None), (max(ends) if ends else None)
    exit_codes = [st.get("exit_code") for st in states.values()]
    return {"started": started, "ended": ended, "duration": (ended - started) if started and ended else None,
            "exit_code": next((c for c in exit_codes if c), 0 if all(c == 0 for c in exit_codes) else None)}


def push_node(h: Handlers, name: str) -> int:
    """The node ``artifact.NAME`` is pushed from during apply (see :func:`node_holding`)."""
    return node_holding(h.ws.spec, h.state, name, h.agent, h.ws.say)


def node_holding(spec: Any, state: Any, name: str, agent_of: Callable[[int], Any],
                 say: Callable[[str], None] | None = None) -> int:
    """The node that holds ``artifact.NAME``'s paths: rank 0's (:func:`artifact_node`); should
    they not all be there (a job that wrote them on node 0, as runform advised before it
    followed rank 0), the first node that has them all. ``agent_of(k)``: node K's agent."""
    from runform.errors import RunformError

    k = artifact_node(spec, state, name)
    if spec.compute.nodes < 2:
        return k
    paths = list(spec.artifacts[name].paths)

    def has_all(node: int) -> bool:
        try:
            exists = agent_of(node).call("status", stages={}, paths=paths, datasets={}).get("exists", {})
        except RunformError:
            return False  # a node out of reach holds nothing to take
        return bool(exists) and all(exists.values())

    if has_all(k):
        return k
    other = next((n for n in range(spec.compute.nodes) if n != k and has_all(n)), None)
    if other is None:
        return k  # complete nowhere: taking it from rank 0's node says what is missing
    if say is not None:
        say(f"artifact.{name}: its paths are on node {other}, not on node {k} where rank 0 ran; "
            f"taken from node {other}")
    return other
