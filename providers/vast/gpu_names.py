"""GPU names as Vast spells them.

Vast's ``gpu_name`` values contain spaces (``"RTX 4090"``, ``"A100 SXM4"``) and the search
endpoint matches them exactly. Users (and the seed pipeline) write ``RTX_4090``,
``rtx 4090`` or ``rtx4090``; :func:`normalise_gpu_name` maps all of them to Vast's form.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

#: Names Vast is known to use (reference §3 plus common consumer and datacenter cards).
KNOWN_GPU_NAMES: tuple[str, ...] = (
    "RTX 2080 Ti", "RTX 3060", "RTX 3070", "RTX 3080", "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti",
    "RTX 4060 Ti", "RTX 4070", "RTX 4070 Ti", "RTX 4080", "RTX 4080S", "RTX 4090", "RTX 4090 Ti",
    "RTX 5070", "RTX 5080", "RTX 5090",
    "RTX A2000", "RTX A4000", "RTX A4500", "RTX A5000", "RTX A6000", "RTX 6000Ada", "RTX 5000Ada",
    "RTX 4000Ada", "Q RTX 6000", "Q RTX 8000", "Titan RTX", "Titan V",
    "A10", "A10G", "A16", "A30", "A40", "A100 PCIE", "A100 SXM4", "A100X", "A800 PCIE",
    "H100 PCIE", "H100 SXM", "H100 NVL", "H200", "H200 NVL", "B200", "GH200 SXM",
    "L4", "L40", "L40S", "Tesla T4", "Tesla V100", "Tesla P100", "Tesla P40", "Tesla K80",
)

#: Short names people use for cards whose Vast name has a prefix.
_ALIASES = {"t4": "Tesla T4", "v100": "Tesla V100", "p100": "Tesla P100", "p40": "Tesla P40",
            "k80": "Tesla K80", "h100sxm5": "H100 SXM", "a100sxm": "A100 SXM4"}


def gpu_key(name: str) -> str:
    """A spelling-insensitive key: lower case, letters and digits only (``rtx4090``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {gpu_key(n): n for n in KNOWN_GPU_NAMES}


def normalise_gpu_name(name: str) -> str:
    """Vast's spelling of ``name``: ``RTX_4090`` / ``rtx 4090`` / ``rtx4090`` → ``"RTX 4090"``.

    Unknown names keep their letters, with underscores and repeated blanks turned into
    single spaces, so a card this table does not know yet still reaches the server.
    """
    key = gpu_key(name)
    if key in _BY_KEY:
        return _BY_KEY[key]
    if key in _ALIASES:
        return _ALIASES[key]
    return " ".join(name.replace("_", " ").split())


def normalise_gpu_names(names: str | Iterable[str]) -> tuple[str, ...]:
    """Normalise a spec's ``gpus`` (one name or a preference list), dropping duplicates."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for n in names:
        v = normalise_gpu_name(str(n))
        if v not in out:
            out.append(v)
    return tuple(out)


def same_gpu(a: str, b: str) -> bool:
    """Whether two spellings name the same card."""
    return gpu_key(normalise_gpu_name(a)) == gpu_key(normalise_gpu_name(b))


def close_matches(name: str, available: Iterable[str], n: int = 3) -> list[str]:
    """Available names that look like ``name`` (for "did you mean" hints)."""
    pool = {gpu_key(a): a for a in available}
    return [pool[k] for k in difflib.get_close_matches(gpu_key(name), list(pool), n=n, cutoff=0.6)]
