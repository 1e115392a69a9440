"""launcher: torchrun runs torch's launcher under the interpreter the stage's command names."""

from __future__ import annotations

from runform.agent.jobs import launch_command


def test_a_python_command_runs_torch_distributed_run_under_that_python() -> None:
    req = {"launcher": "torchrun", "nproc": 2}
    cmd = launch_command({**req, "command": "/opt/conda/bin/python -m pkg.train --lr 1e-3"})
    assert cmd == ("/opt/conda/bin/python -m torch.distributed.run --standalone "
                   "--nproc_per_node=2 -m pkg.train --lr 1e-3")
    assert launch_command({**req, "command": "python3 train.py a"}) == (
        "python3 -m torch.distributed.run --standalone --nproc_per_node=2 train.py a")
    # anything else still goes to torchrun on PATH; launcher bash leaves the command alone
    assert launch_command({**req, "command": "./train.sh x"}) == "torchrun --standalone --nproc_per_node=2 ./train.sh x"
    assert launch_command({"command": "python -m pkg.train", "launcher": "bash"}) == "python -m pkg.train"


def test_a_node_of_a_fleet_joins_the_c10d_rendezvous_on_node_0() -> None:
    multinode = {"nnodes": 2, "node": 1, "endpoint": "10.0.0.5:29400", "rdzv_id": "run-train-abc",
                 "local_addr": "10.0.0.6"}
    cmd = launch_command({"launcher": "torchrun", "nproc": 4, "multinode": multinode,
                          "command": "python -m pkg.train"})
    assert cmd == ("python -m torch.distributed.run --nnodes 2 --nproc-per-node 4 "
                   "--rdzv-backend c10d --rdzv-endpoint 10.0.0.5:29400 --rdzv-id run-train-abc "
                   "--rdzv-conf is_host=false --max-restarts 0 --local-addr 10.0.0.6 -m pkg.train")
    host = launch_command({"launcher": "torchrun", "nproc": 1, "command": "python t.py",
                           "multinode": {**multinode, "node": 0, "local_addr": None}})
    assert "--node-rank" not in host and "is_host=true" in host and "--local-addr" not in host

