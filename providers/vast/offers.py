"""Offers: the value object, the filters a compute spec implies, ranking and explanations.

Pure functions over JSON; the provider does the I/O. The same filters build the server-side
query (:func:`build_query`) and re-check every offer that comes back (:func:`feasible`), so
an offer the server let through by mistake (or a stale one) is still rejected here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from runform.providers.vast.config import VastCompute
from runform.providers.vast.gpu_names import close_matches, gpu_key

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

SEARCH_LIMIT = 200
BROAD_SEARCH_LIMIT = 1000


def _f(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


@attrs.frozen
class Offer:
    """One rentable bundle from ``POST /bundles/``. ``id`` is the ask id for ``PUT /asks/{id}/``."""

    id: int
    gpu_name: str
    num_gpus: int
    dph_total: float
    machine_id: int | None = None
    host_id: int | None = None
    reliability: float | None = None
    cuda_max_good: float | None = None
    disk_space: float | None = None
    direct_port_count: int = 0
    duration_s: float | None = None
    verified: bool | None = None  # None: the row says neither way (the server's filter is trusted)
    rentable: bool = True
    rented: bool = False
    inet_down: float | None = None
    gpu_ram_mb: float | None = None
    geolocation: str = ""
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Offer:
        """Build from an offer as the API returns it (numbers may be strings or null)."""
        rel = raw.get("reliability2", raw.get("reliability"))
        return cls(
            id=int(raw["id"]),
            gpu_name=str(raw.get("gpu_name") or "").strip(),
            num_gpus=int(_f(raw.get("num_gpus")) or 0),
            dph_total=_f(raw.get("dph_total")) or 0.0,
            machine_id=int(raw["machine_id"]) if raw.get("machine_id") is not None else None,
            host_id=int(raw["host_id"]) if raw.get("host_id") is not None else None,
            reliability=_f(rel),
            cuda_max_good=_f(raw.get("cuda_max_good")),
            disk_space=_f(raw.get("disk_space")),
            direct_port_count=int(_f(raw.get("direct_port_count")) or 0),
            duration_s=_f(raw.get("duration")),
            verified=verification_of(raw),
            rentable=bool(raw.get("rentable", True)),
            rented=bool(raw.get("rented", False)),
            inet_down=_f(raw.get("inet_down")),
            gpu_ram_mb=_f(raw.get("gpu_ram")),
            geolocation=str(raw.get("geolocation") or "").strip(" ,"),
            raw=dict(raw),
        )

    def to_json(self) -> dict[str, Any]:
        """The fields runform shows and keeps (not the whole raw offer)."""
        return {
            "id": self.id, "gpu_name": self.gpu_name, "num_gpus": self.num_gpus,
            "dph_total": self.dph_total, "machine_id": self.machine_id, "host_id": self.host_id,
            "reliability": self.reliability, "cuda_max_good": self.cuda_max_good,
            "disk_space": self.disk_space, "direct_port_count": self.direct_port_count,
            "duration": self.duration_s, "verified": self.verified, "inet_down": self.inet_down,
            "gpu_ram": self.gpu_ram_mb, "geolocation": self.geolocation,
        }


def verification_of(raw: Mapping[str, Any]) -> bool | None:
    """Whether an offer row is verified: ``verification == "verified"`` or ``vericode == 1``
    (real rows carry no ``verified`` boolean: that is only a search filter key). None when the
    row has neither field: the server's ``verified`` filter is trusted then."""
    verification, vericode = raw.get("verification"), raw.get("vericode")
    if verification is None and vericode is None:
        return None
    if isinstance(verification, str) and verification.strip():
        return verification.strip().lower() == "verified"
    try:
        return int(vericode) == 1  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def estimate_cost(dph_total: float, duration_s: float | None) -> float | None:
    """Dollars for running ``duration_s`` at ``dph_total`` $/h (None when no duration is set)."""
    return None if duration_s is None else round(dph_total * duration_s / 3600.0, 4)


# --------------------------------------------------------------------------- filters


@attrs.frozen
class Check:
    """One filter: its name, how it reads in a message, and the test."""

    name: str
    text: str
    ok: Callable[[Offer], bool]


def checks(cfg: VastCompute) -> list[Check]:
    """The client-side filters ``cfg`` implies, in the order the explanation reports them."""
    keys = {gpu_key(g) for g in cfg.gpus}
    out = [
        Check("rentable", "rentable", lambda o: o.rentable and not o.rented),
        Check("gpus", f"gpu in [{', '.join(cfg.gpus)}]", lambda o: gpu_key(o.gpu_name) in keys),
        Check("num_gpus", f"num_gpus = {cfg.num_gpus}", lambda o: o.num_gpus == cfg.num_gpus),
    ]
    if cfg.verified:
        out.append(Check("verified", "verified", lambda o: o.verified is not False))
    out.append(Check("min_reliability", f"reliability ≥ {cfg.min_reliability:g}",
                     lambda o: (o.reliability or 0.0) >= cfg.min_reliability))
    if cfg.min_cuda is not None:
        cuda = cfg.min_cuda
        out.append(Check("min_cuda", f"cuda_max_good ≥ {cuda:g}", lambda o: (o.cuda_max_good or 0.0) >= cuda))
    out += [
        Check("disk_gb", f"disk_space ≥ {cfg.disk_gb:g} GB", lambda o: (o.disk_space or 0.0) >= cfg.disk_gb),
        Check("direct_port_count", "direct_port_count ≥ 1", lambda o: o.direct_port_count >= 1),
    ]
    if cfg.max_duration_s is not None:
        secs = cfg.max_duration_s
        out.append(Check("max_duration", f"duration ≥ max_duration ({secs / 3600:g} h)",
                         lambda o: o.duration_s is None or o.duration_s >= secs))
    if cfg.min_inet_down is not None:
        down = cfg.min_inet_down
        out.append(Check("min_inet_down", f"inet_down ≥ {down:g}",
                         lambda o: o.inet_down is None or o.inet_down >= down))
    if cfg.max_price_per_hour is not None:
        cap = cfg.max_price_per_hour
        out.append(Check("max_price_per_hour", f"dph_total ≤ ${cap:g}/h", lambda o: o.dph_total <= cap))
    return out


def build_query(cfg: VastCompute, *, limit: int = SEARCH_LIMIT) -> dict[str, Any]:
    """The ``POST /bundles/`` body for ``cfg``: every filter the API can apply server-side."""
    q: dict[str, Any] = {
        "gpu_name": {"in": list(cfg.gpus)} if len(cfg.gpus) > 1 else {"eq": cfg.gpus[0]},
        "num_gpus": {"eq": cfg.num_gpus},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "reliability": {"gte": cfg.min_reliability},
        "disk_space": {"gte": cfg.disk_gb},
        "direct_port_count": {"gte": 1},
    }
    if cfg.verified:
        q["verified"] = {"eq": True}
    if cfg.min_cuda is not None:
        q["cuda_max_good"] = {"gte": cfg.min_cuda}
    if cfg.max_duration_s is not None:
        q["duration"] = {"gte": cfg.max_duration_s}
    if cfg.min_inet_down is not None:
        q["inet_down"] = {"gte": cfg.min_inet_down}
    if cfg.max_price_per_hour is not None:
        q["dph_total"] = {"lte": cfg.max_price_per_hour}
    q.update(order=[["dph_total", "asc"]], type="on-demand", limit=limit, allocated_storage=cfg.disk_gb)
    return q


def broad_query(cfg: VastCompute, *, limit: int = BROAD_SEARCH_LIMIT) -> dict[str, Any]:
    """A query with no filters, for explaining an empty result (priced like :func:`build_query`)."""
    return {"order": [["dph_total", "asc"]], "type": "on-demand", "limit": limit,
            "allocated_storage": cfg.disk_gb}


def feasible(offer: Offer, cfg: VastCompute) -> bool:
    return all(c.ok(offer) for c in checks(cfg))


def rank(offers: Iterable[Offer], cfg: VastCompute, *, exclude_machines: Iterable[int] = ()) -> list[Offer]:
    """Feasible offers in the order they are tried: GPU preference first, then cheapest."""
    excluded = set(exclude_machines)
    order = {gpu_key(g): i for i, g in enumerate(cfg.gpus)}
    ok = [o for o in offers if feasible(o, cfg) and o.machine_id not in excluded]
    return sorted(ok, key=lambda o: (order[gpu_key(o.gpu_name)], o.dph_total, o.id))


def explain_empty(offers: Sequence[Offer], cfg: VastCompute, *, exclude_machines: Iterable[int] = ()) -> str:
    """Why nothing is feasible: which filter removed how many offers, applied in turn.

    ``offers`` should come from an unfiltered search (:func:`broad_query`).
    """
    if not offers:
        return "no feasible offer: the search returned no offers at all"
    left = list(offers)
    steps: list[str] = []
    gpu_gap = False
    for check in checks(cfg):
        kept = [o for o in left if check.ok(o)]
        if len(kept) < len(left):
            steps.append(f"{len(left) - len(kept)} failed {check.text}")
            gpu_gap = gpu_gap or (check.name == "gpus" and not kept)
        left = kept
    excluded = set(exclude_machines)
    if excluded:
        kept = [o for o in left if o.machine_id not in excluded]
        if len(kept) < len(left):
            steps.append(f"{len(left) - len(kept)} on hosts that already failed")
        left = kept
    msg = f"no feasible offer: of {len(offers)} offers, " + "; ".join(steps or ["none were removed"])
    if left:  # every filter passed yet nothing was returned by the filtered search
        msg += f"; {len(left)} passed here but not in the filtered search (the market moved?)"
    if gpu_gap:
        names = sorted({o.gpu_name for o in offers if o.gpu_name})
        hints = list(dict.fromkeys(m for g in cfg.gpus for m in close_matches(g, names)))
        msg += f" (GPUs on offer: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"
        msg += f"; did you mean {' or '.join(hints)}?)" if hints else ")"
    return msg


# --------------------------------------------------------------------------- rows and table


def offer_rows(ranked: Sequence[Offer], cfg: VastCompute) -> list[dict[str, Any]]:
    """What ``SupportsOffers.offers`` returns: the ranked offers, the first one chosen."""
    pref = {gpu_key(g): i for i, g in enumerate(cfg.gpus)}
    rows = []
    for i, o in enumerate(ranked):
        row = o.to_json()
        row.update(rank=i + 1, preference=pref.get(gpu_key(o.gpu_name), len(pref)) + 1,
                   estimated_cost=estimate_cost(o.dph_total, cfg.max_duration_s), chosen=i == 0)
        rows.append(row)
    return rows


def render_table(rows: Sequence[Mapping[str, Any]], *, limit: int = 20, title: str | None = None) -> Table:
    """A rich table of offer rows (from :func:`offer_rows`), the chosen one marked."""
    from rich.table import Table

    shown = list(rows[:limit])
    table = Table(title=title, caption=f"Shown {len(shown)} of {len(rows)} offers" if rows else "no offers")
    for col, justify in (("#", "right"), ("GPU", "left"), ("N", "right"), ("$/h", "right"),
                         ("est. $", "right"), ("rel.", "right"), ("CUDA", "right"), ("disk GB", "right"),
                         ("location", "left"), ("machine", "right"), ("offer", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in shown:
        cost = r.get("estimated_cost")
        table.add_row(
            str(r.get("rank", "")), str(r["gpu_name"]), str(r["num_gpus"]), f"{r['dph_total']:.3f}",
            "-" if cost is None else f"{cost:.2f}",
            "-" if r.get("reliability") is None else f"{r['reliability']:.3f}",
            "-" if r.get("cuda_max_good") is None else f"{r['cuda_max_good']:g}",
            "-" if r.get("disk_space") is None else f"{r['disk_space']:.0f}",
            str(r.get("geolocation") or ""), str(r.get("machine_id") or ""), str(r["id"]),
            "◀ chosen" if r.get("chosen") else "",
            style="bold" if r.get("chosen") else None,
        )
    return table
