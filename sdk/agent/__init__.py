"""runform's agent: the part of runform that runs on the machine.

It speaks JSON: ``python -m runform.agent`` reads one request object on stdin and writes one
response object on stdout. The local provider calls :func:`runform.agent.ops.handle` in-process
(the same code path, without a process per call). Only the standard library is imported here,
so the agent starts fast on a bare image; storage backends are imported by the ops that need them.
"""
