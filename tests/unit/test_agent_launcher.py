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
