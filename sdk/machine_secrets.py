"""What of the secrets env file goes to the machine.

Reading a dataset needs no storage credentials on the machine: the client signs presigned
GET URLs for the objects to fetch (see ``runform.storage.urlfetch``). So the storage
keys (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``B2_KEY_ID``,
``B2_APP_KEY``) reach the machine only for a spec with an artifact pushed to ``s3://`` or
``b2://`` (uploads keep boto3 and its credentials). Every other key is sent as written.
"""

from __future__ import annotations

from runform.envfile import parse_env
from runform.spec.model import Spec

STORAGE_KEYS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                          "B2_KEY_ID", "B2_APP_KEY"})
_PUSH_SCHEMES = ("s3://", "b2://")


def needs_storage_keys(spec: Spec) -> bool:
    """Whether the machine itself writes to S3/B2 (an artifact pushed there)."""
    return any(a.to.startswith(_PUSH_SCHEMES) for a in spec.artifacts.values())


def machine_secrets(spec: Spec, raw: bytes) -> bytes:
    """The secrets file as the machine gets it: ``raw``, minus the storage keys when the spec
    does not need them there (re-written as ``KEY="value"`` lines, which ``parse_env`` reads
    back to the same values)."""
    if needs_storage_keys(spec):
        return raw
    env = parse_env(raw.decode("utf-8"))
    if not STORAGE_KEYS & env.keys():
        return raw
    return "".join(f'{k}="{_escape(v)}"\n' for k, v in env.items() if k not in STORAGE_KEYS).encode()


def _escape(value: str) -> str:
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
