"""Per-instance SSH keys: an ed25519 pair under ``<state_dir>/keys/``, named by label.

The private key never leaves this machine; the public key is attached to the instance with
``POST /instances/{id}/ssh/``. Re-running with the same label reuses the pair, so an adopted
instance is reachable with the key it was given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from runform.atomic import atomic_write


def key_path(state_dir: Path, label: str) -> Path:
    """Where the private key for ``label`` lives (the public key is beside it, ``.pub``)."""
    from runform.rootpath import check_name

    # one plain name under keys/ ("..", ".x" refused: the label may come from an edited state)
    return Path(state_dir) / "keys" / check_name(re.sub(r"[^A-Za-z0-9_.-]", "_", label), what="machine label")


def ensure_keypair(state_dir: Path, label: str) -> tuple[Path, str]:
    """The private key path and the OpenSSH public key line for ``label``, created if missing."""
    private = key_path(state_dir, label)
    public = private.with_name(private.name + ".pub")
    if private.is_file() and public.is_file():
        return private, public.read_text(encoding="utf-8").strip()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode() + f" runform-{label}"
    private.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(private.parent, 0o700)
    atomic_write(private, pem, mode=0o600)
    public.write_text(line + "\n", encoding="utf-8")
    return private, line


def remove_keypair(state_dir: Path, label: str) -> None:
    """Forget the pair once its instance is confirmed gone."""
    private = key_path(state_dir, label)
    for p in (private, private.with_name(private.name + ".pub")):
        p.unlink(missing_ok=True)
