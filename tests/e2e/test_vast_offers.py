"""Offers: GPU names, filters from the compute spec, preference then price, the
no-feasible-offer explanation, the offers table and the cost estimate."""

from __future__ import annotations

import pytest
from rich.console import Console

from runform.errors import ProviderError
from runform.providers.vast.config import VastCompute, cuda_of_image
from runform.providers.vast.gpu_names import normalise_gpu_name, normalise_gpu_names
from runform.providers.vast.offers import (
    Offer,
    build_query,
    estimate_cost,
    explain_empty,
    feasible,
    offer_rows,
    rank,
    render_table,
)

IMAGE = "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"


def compute(**over):
    base = {"provider": "vast", "gpus": ["RTX 4090", "H200"], "image": IMAGE, "disk_gb": 50,
            "max_duration": "2h", "max_price_per_hour": 3.0, "min_reliability": 0.95}
    base.update(over)
    return base


@pytest.mark.parametrize("raw, want", [
    ("RTX_4090", "RTX 4090"), ("rtx 4090", "RTX 4090"), ("rtx4090", "RTX 4090"), ("RTX  4090", "RTX 4090"),
    ("a100_sxm4", "A100 SXM4"), ("h100 sxm", "H100 SXM"), ("t4", "Tesla T4"), ("Q_RTX_8000", "Q RTX 8000"),
    ("h200", "H200"), ("Future_GPU_9000", "Future GPU 9000"),
])
def test_gpu_names_take_vasts_spelling(raw: str, want: str) -> None:
    assert normalise_gpu_name(raw) == want


def test_gpu_preference_list_is_normalised_and_deduplicated() -> None:
    assert normalise_gpu_names(["RTX_4090", "rtx 4090", "h200"]) == ("RTX 4090", "H200")
    assert normalise_gpu_names("rtx_3090") == ("RTX 3090",)


def test_compute_defaults_and_cuda_from_the_image_tag() -> None:
    cfg = VastCompute.from_compute({"gpus": "rtx_4090", "image": "pytorch/pytorch:2.2.0-cuda12.1-cudnn8-runtime"})
    assert cfg.gpus == ("RTX 4090",) and cfg.num_gpus == 1 and cfg.min_cuda == 12.1
    assert cfg.verified and cfg.ready_timeout_s == 1200 and cfg.max_duration_s is None
    assert cuda_of_image("nvidia/cuda:12.8.0-runtime-ubuntu22.04") is None  # no "cudaX.Y" spelled
    with pytest.raises(ProviderError, match="compute.gpus"):
        VastCompute.from_compute({"image": IMAGE})
    with pytest.raises(ProviderError, match="disk_gb"):
        VastCompute.from_compute({"gpus": ["H200"], "image": IMAGE, "disk_gb": 4})


def test_server_query_sends_spaced_names_and_every_filter() -> None:
    cfg = VastCompute.from_compute(compute(gpus=["RTX_4090", "h200"], min_cuda=12.1))
    q = build_query(cfg)
    assert q["gpu_name"] == {"in": ["RTX 4090", "H200"]}
    assert q["num_gpus"] == {"eq": 1} and q["verified"] == {"eq": True} and q["rentable"] == {"eq": True}
    assert q["reliability"] == {"gte": 0.95} and q["cuda_max_good"] == {"gte": 12.1}
    assert q["disk_space"] == {"gte": 50} and q["direct_port_count"] == {"gte": 1}
    assert q["duration"] == {"gte": 7200} and q["dph_total"] == {"lte": 3.0}
    assert q["order"] == [["dph_total", "asc"]] and q["allocated_storage"] == 50


def _offer(**over) -> Offer:
    raw = {"id": 1, "machine_id": 10, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.4,
           "reliability2": 0.99, "cuda_max_good": 12.8, "disk_space": 200, "direct_port_count": 20,
           "duration": 86400 * 3, "verification": "verified", "vericode": 1, "rentable": True,
           "rented": False, "inet_down": 500.0}
    raw.update(over)
    return Offer.from_json(raw)


def test_offer_from_json_coerces_strings_and_nulls() -> None:
    o = Offer.from_json({"id": "7", "gpu_name": " RTX 4090 ", "num_gpus": "2", "dph_total": "0.5",
                         "reliability": 0.9, "cuda_max_good": None, "geolocation": ", US"})
    assert (o.id, o.gpu_name, o.num_gpus, o.dph_total, o.reliability) == (7, "RTX 4090", 2, 0.5, 0.9)
    assert o.cuda_max_good is None and o.geolocation == "US"


def test_client_side_recheck_rejects_what_the_server_let_through() -> None:
    cfg = VastCompute.from_compute(compute())
    assert feasible(_offer(), cfg)
    for bad in ({"gpu_name": "RTX 3090"}, {"num_gpus": 2}, {"verification": "unverified", "vericode": 0},
                {"verification": "deverified"}, {"verification": None, "vericode": 0}, {"rented": True},
                {"inet_down": 50.0},
                {"reliability2": 0.9}, {"cuda_max_good": 12.2}, {"disk_space": 40}, {"direct_port_count": 0},
                {"duration": 3600}, {"dph_total": 3.5}):
        assert not feasible(_offer(**bad), cfg), bad


def test_verification_comes_from_verification_or_vericode_never_a_verified_boolean() -> None:
    cfg = VastCompute.from_compute(compute())
    # a real row: no "verified" key at all (that is only a search filter key)
    assert feasible(_offer(verification="verified", vericode=1), cfg)
    assert feasible(_offer(verification=None, vericode=1), cfg)
    # a row with neither field: the server's verified filter is trusted
    raw = {k: v for k, v in _offer().raw.items() if k not in ("verification", "vericode")}
    assert Offer.from_json(raw).verified is None and feasible(Offer.from_json(raw), cfg)
    assert not feasible(_offer(verified=True, verification="unverified", vericode=0), cfg)


def test_min_inet_down_defaults_to_what_peers_use() -> None:
    cfg = VastCompute.from_compute(compute())
    assert cfg.min_inet_down == 128.0 and build_query(cfg)["inet_down"] == {"gte": 128.0}
    assert VastCompute.from_compute(compute(options={"min_inet_down": 0})).min_inet_down is None
    assert feasible(_offer(inet_down=None), cfg)  # a row without it: the server filtered


def test_an_image_without_a_tag_is_refused() -> None:
    for image in ("pytorch/pytorch", "registry:5000/team/img", "img:"):
        with pytest.raises(ProviderError, match="has no tag"):
            VastCompute.from_compute(compute(image=image))
    for image in ("img:1", "registry:5000/team/img:2.0", "img@sha256:" + "a" * 64):
        VastCompute.from_compute(compute(image=image))


def test_rank_prefers_the_gpu_order_then_the_cheapest() -> None:
    cfg = VastCompute.from_compute(compute())
    offers = [_offer(id=1, gpu_name="H200", dph_total=0.1, machine_id=1),
              _offer(id=2, gpu_name="RTX 4090", dph_total=0.6, machine_id=2),
              _offer(id=3, gpu_name="RTX_4090", dph_total=0.5, machine_id=3),
              _offer(id=4, gpu_name="H200", dph_total=2.0, machine_id=4)]
    assert [o.id for o in rank(offers, cfg)] == [3, 2, 1, 4]
    assert [o.id for o in rank(offers, cfg, exclude_machines={3})] == [2, 1, 4]


def test_search_against_the_standin_matches_an_independent_recomputation(vast_standin, vast_provider) -> None:
    cfg = VastCompute.from_compute(compute(gpus=["rtx_4090", "A100 SXM4"], max_price_per_hour=2.5))
    got = vast_provider.search(cfg)
    assert got, "the seeded catalogue has feasible offers"
    market = [Offer.from_json({**o, "dph_total": o["dph_base"] + o["storage_cost"] * 50 / 720})
              for o in vast_standin.offers()]
    want = sorted((o for o in market if feasible(o, cfg)),
                  key=lambda o: (o.gpu_name != "RTX 4090", o.dph_total, o.id))
    assert [o.id for o in got] == [o.id for o in want]
    assert got[0].gpu_name == "RTX 4090"  # preference beats price
    level = [o.dph_total for o in got if o.gpu_name == "RTX 4090"]
    assert level == sorted(level)


def test_a_cheaper_less_preferred_gpu_loses(vast_standin, vast_provider) -> None:
    good = {"verification": "verified", "vericode": 1, "reliability": 0.99, "cuda_max_good": 12.8, "disk_space": 200,
            "direct_port_count": 10, "duration": 86400.0, "num_gpus": 1, "storage_cost": 0.0}
    vast_standin.set_offers([{**good, "gpu_name": "H200", "dph_base": 0.10},
                             {**good, "gpu_name": "RTX 4090", "dph_base": 0.90},
                             {**good, "gpu_name": "RTX 4090", "dph_base": 0.50},
                             {**good, "gpu_name": "RTX 4090", "dph_base": 0.20,
                                  "verification": "unverified", "vericode": 0}])
    rows = vast_provider.offers(compute(), None)
    assert [(r["gpu_name"], r["dph_total"]) for r in rows] == [("RTX 4090", 0.5), ("RTX 4090", 0.9), ("H200", 0.1)]
    assert [r["preference"] for r in rows] == [1, 1, 2]


def test_no_feasible_offer_says_which_filter_removed_how_many(vast_standin, vast_provider) -> None:
    n = len(vast_standin.offers())
    with pytest.raises(ProviderError) as err:
        vast_provider.offers(compute(gpus=["RTX 4090"], max_price_per_hour=0.01), None)
    msg = str(err.value)
    assert msg.startswith(f"no feasible offer: of {n} offers, ")
    assert "failed gpu in [RTX 4090]" in msg and "failed dph_total ≤ $0.01/h" in msg
    removed = [int(part.split(" failed ")[0].split()[-1]) for part in msg.split("offers, ")[1].split("; ")
               if " failed " in part]
    assert sum(removed) == n  # every offer is accounted for, once


def test_unknown_gpu_gets_a_did_you_mean(vast_provider) -> None:
    with pytest.raises(ProviderError, match=r"GPUs on offer: .*did you mean RTX 4090 or RTX 3090\?"):
        vast_provider.offers(compute(gpus=["RTX 4099"]), None)


def test_explain_empty_counts_excluded_hosts_and_empty_markets() -> None:
    cfg = VastCompute.from_compute(compute())
    assert explain_empty([], cfg) == "no feasible offer: the search returned no offers at all"
    msg = explain_empty([_offer(machine_id=5)], cfg, exclude_machines={5})
    assert "1 on hosts that already failed" in msg


def test_offer_rows_estimate_cost_and_the_table_marks_the_chosen_one(vast_provider) -> None:
    rows = vast_provider.offers(compute(), None)
    assert rows[0]["chosen"] and not any(r["chosen"] for r in rows[1:])
    assert rows[0]["estimated_cost"] == estimate_cost(rows[0]["dph_total"], 7200) == round(rows[0]["dph_total"] * 2, 4)
    assert estimate_cost(1.5, None) is None
    console = Console(record=True, width=160)
    console.print(render_table(rows, limit=3, title="offers"))
    text = console.export_text()
    assert "◀ chosen" in text and str(rows[0]["id"]) in text and f"Shown 3 of {len(rows)} offers" in text
    assert text.count("◀ chosen") == 1
    cfg = VastCompute.from_compute(compute(max_duration=None))
    assert offer_rows([_offer()], cfg)[0]["estimated_cost"] is None
