"""A generated, seeded market of Vast offers: several GPU types, hosts, prices, CUDA versions.

Every offer sits on its own machine (``machine_id``); hosts (``host_id``) own several
machines. Fields and units follow the real ``/bundles/`` rows (reference §3): ``gpu_ram``
in MB, ``duration`` in seconds, ``disk_space`` in GB, ``compute_cap`` ×100, both
``reliability`` and ``reliability2``. ``dph_total`` is computed at search time from
``dph_base`` plus storage for the ``allocated_storage`` asked for. Like real rows, an offer
says ``verification`` ("verified", "unverified", "deverified") and ``vericode``; there is no
``verified`` boolean (that is only a search filter key).
"""

from __future__ import annotations

import random
from typing import Any

#: name: (gpu_ram MB, $/h per GPU, compute_cap, dlperf per GPU, weight in the market)
GPUS: dict[str, tuple[int, float, int, float, int]] = {
    "RTX 3090": (24576, 0.20, 860, 24.0, 14),
    "RTX 4090": (24564, 0.35, 890, 45.0, 20),
    "RTX A5000": (24564, 0.22, 860, 22.0, 6),
    "Q RTX 8000": (49152, 0.25, 750, 16.0, 4),
    "A100 PCIE": (40960, 0.80, 800, 60.0, 6),
    "A100 SXM4": (81920, 1.10, 800, 75.0, 8),
    "H100 PCIE": (81559, 1.90, 900, 110.0, 5),
    "H100 SXM": (81559, 2.20, 900, 140.0, 8),
    "H200": (143771, 2.90, 900, 160.0, 5),
    "L40S": (46068, 0.75, 890, 55.0, 5),
    "Tesla T4": (15360, 0.12, 750, 8.0, 4),
}
PLACES = ["California, US", "Texas, US", "Quebec, CA", "Ontario, CA", "Hesse, DE", "Oslo, NO",
          "North Holland, NL", "Tokyo, JP", ", US", "Lviv, UA"]
FIRST_ID = 23_013_704
INTERNAL = frozenset({"vanished"})  # the stand-in's own book-keeping, never sent


def generate_offers(seed: int = 0, count: int = 120) -> list[dict[str, Any]]:
    """``count`` offers, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    names = list(GPUS)
    weights = [GPUS[n][4] for n in names]
    hosts = [rng.randint(100, 999) for _ in range(max(3, count // 4))]
    return [_offer(rng, i, rng.choices(names, weights)[0], hosts) for i in range(count)]


def _offer(rng: random.Random, i: int, name: str, hosts: list[int]) -> dict[str, Any]:
    """Offer number ``i`` of GPU ``name``. The draws from ``rng`` happen in the order of the
    fields (the parts below are evaluated left to right), so a seed gives the same market."""
    n = rng.choice([1, 1, 1, 1, 2, 2, 4, 8])
    dph_base = round(GPUS[name][1] * n * rng.uniform(0.75, 1.45), 4)
    rel = round(rng.choice([rng.uniform(0.80, 0.95), rng.uniform(0.95, 0.9995), rng.uniform(0.97, 0.9995)]), 4)
    offer = {**_gpu(rng, i, name, n, hosts), **_machine(rng), **_market(rng, dph_base, rel),
             **_performance(rng, GPUS[name][3], n)}
    offer["vericode"] = 1 if offer["verification"] == "verified" else 0
    offer["score"] = round(offer["dlperf"] / max(dph_base, 0.01) * rel, 3)
    return offer


def _gpu(rng: random.Random, i: int, name: str, n: int, hosts: list[int]) -> dict[str, Any]:
    ram, _, cap, _, _ = GPUS[name]
    return {
        "id": FIRST_ID + i * 17 + rng.randint(0, 16),
        "ask_contract_id": FIRST_ID + i * 17,
        "machine_id": 4000 + i * 3 + rng.randint(0, 2),
        "host_id": rng.choice(hosts),
        "gpu_name": name,
        "num_gpus": n,
        "gpu_ram": ram,
        "gpu_total_ram": ram * n,
        "gpu_frac": 1.0,
        "gpu_arch": "nvidia",
        "gpu_max_power": 350.0,
        "gpu_max_temp": 83.0,
        "gpu_mem_bw": round(rng.uniform(400, 4800), 1),
        "gpu_display_active": False,
        "compute_cap": cap,
    }


def _machine(rng: random.Random) -> dict[str, Any]:
    return {
        "cuda_max_good": rng.choice([11.8, 12.0, 12.2, 12.4, 12.6, 12.8, 12.8, 13.0]),
        "driver_version": rng.choice(["535.183.01", "550.120", "560.35.03", "570.86.15"]),
        "cpu_name": rng.choice(["AMD EPYC 7543", "Intel Xeon Gold 6338", "AMD Ryzen 9 7950X"]),
        "cpu_cores": rng.choice([None, 16, 32, 64, 128]),
        "cpu_cores_effective": float(rng.choice([8, 16, 32, 64])),
        "cpu_ram": rng.choice([64, 128, 256, 512, 1024]) * 1000,
        "cpu_ghz": round(rng.uniform(2.0, 4.5), 2),
        "cpu_arch": "amd64",
        "has_avx": 1,
        "disk_space": float(rng.choice([40, 60, 100, 200, 300, 500, 1000, 2000])),
        "disk_bw": round(rng.uniform(200, 6000), 1),
        "disk_name": "nvme",
        "inet_down": round(rng.uniform(80, 4000), 1),
        "inet_up": round(rng.uniform(80, 2000), 1),
        "inet_down_cost": 0.002,
        "inet_up_cost": 0.002,
        "direct_port_count": rng.choice([0, 8, 20, 40, 40, 100, 500]),
    }


def _market(rng: random.Random, dph_base: float, rel: float) -> dict[str, Any]:
    return {
        "dph_base": dph_base,
        "min_bid": round(dph_base * rng.uniform(0.4, 0.8), 4),
        "storage_cost": round(rng.uniform(0.05, 0.30), 3),
        "reliability": rel,
        "reliability2": rel,
        "verification": "verified" if rng.random() < 0.85 else rng.choice(["unverified", "deverified"]),
        "rentable": True,
        "rented": False,
        "external": False,
        "hosting_type": 1 if rng.random() < 0.4 else 0,
        "static_ip": rng.random() < 0.6,
        "geolocation": rng.choice(PLACES),
        "duration": round(rng.uniform(1, 60) * 86400.0, 1),
    }


def _performance(rng: random.Random, dlperf: float, n: int) -> dict[str, Any]:
    return {
        "dlperf": round(dlperf * n * rng.uniform(0.9, 1.1), 2),
        "total_flops": round(dlperf * n * 1.7, 2),
        "pci_gen": rng.choice([3.0, 4.0, 5.0]),
        "pcie_bw": round(rng.uniform(10, 50), 1),
        "bw_nvlink": 0.0,
        "mobo_name": "ROMED8-2T",
        "ubuntu_version": "22.04",
        "vms_enabled": False,
        "cluster_id": None,
    }


def priced(offer: dict[str, Any], allocated_storage: float, bid: bool = False) -> dict[str, Any]:
    """A copy of ``offer`` with ``dph_total`` and the per-dollar figures for that much storage."""
    out = {k: v for k, v in offer.items() if k not in INTERNAL}
    base = offer["min_bid"] if bid else offer["dph_base"]
    total = round(base + offer["storage_cost"] * float(allocated_storage) / (30 * 24), 6)
    out["dph_total"] = total
    out["dlperf_per_dphtotal"] = round(offer["dlperf"] / total, 3) if total else None
    out["flops_per_dphtotal"] = round(offer["total_flops"] / total, 3) if total else None
    out["storage_total_cost"] = round(offer["storage_cost"] * float(allocated_storage) / (30 * 24), 6)
    return out
