"""``python -m runform.testing.vast``: run the Vast stand-in until interrupted.

Example: ``python -m runform.testing.vast --port 8765 --rate-429 0.2 --lost-create-rate 0.1``,
then ``VAST_API_URL=http://127.0.0.1:8765 VAST_API_KEY=standin-vast-key runform apply``.
``GET /_standin/audit`` shows what happened.
"""

from __future__ import annotations

import argparse

from runform.testing.serve import until_stopped
from runform.testing.vast import DEFAULT_API_KEY, Faults, Lifecycle, VastStandIn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runform.testing.vast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    p.add_argument("--seed", type=int, default=0, help="catalogue and fault randomness")
    p.add_argument("--offers", type=int, default=120, help="how many offers to generate")
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--root-dir", help="where instances get their folders (default: a temp dir)")
    p.add_argument("--ssh-host", help="instances' SSH endpoint (a real sshd)")
    p.add_argument("--ssh-port", type=int)
    p.add_argument("--ssh-user")
    p.add_argument("--authorized-keys", help="the sshd's authorized_keys file (attached keys go there)")
    life = p.add_argument_group("lifecycle (seconds)")
    life.add_argument("--created-s", type=float, default=2.0)
    life.add_argument("--loading-s", type=float, default=5.0)
    life.add_argument("--destroy-s", type=float, default=0.0,
                      help="destroyed instances linger (unloaded, destroyed/terminated) this long")
    f = p.add_argument_group("faults (probabilities 0..1)")
    for name in ("rate-429", "rate-5xx", "lost-create-rate", "vanish-rate", "contract-on-failure-rate",
                 "stuck-loading-rate", "oci-error-rate", "exited-rate"):
        f.add_argument(f"--{name}", type=float, default=0.0)
    f.add_argument("--retry-after", type=float, help="send Retry-After (seconds) on injected 429s")
    f.add_argument("--lost-create-mode", choices=["500", "drop"], default="500")
    f.add_argument("--search-quota-exceeded", action="store_true")
    f.add_argument("--legacy-account", action="store_true", help="the deprecated v0 list answers (else 410)")
    f.add_argument("--enforce-intervals", action="store_true",
                   help="429 (plain text) for calls sooner than an endpoint's documented minimum interval")
    f.add_argument("--ports-style", choices=["dict", "list", "absent"], default="dict")
    f.add_argument("--list-lag-s", type=float, default=0.0,
                   help="instances younger than this many seconds are missing from the list endpoints")
    a = p.parse_args(argv)

    faults = Faults(rate_429=a.rate_429, rate_5xx=a.rate_5xx, retry_after=a.retry_after,
                    lost_create_rate=a.lost_create_rate, lost_create_mode=a.lost_create_mode,
                    vanish_rate=a.vanish_rate, contract_on_failure_rate=a.contract_on_failure_rate,
                    stuck_loading_rate=a.stuck_loading_rate, oci_error_rate=a.oci_error_rate,
                    exited_rate=a.exited_rate, search_quota_exceeded=a.search_quota_exceeded,
                    list_lag_s=a.list_lag_s, legacy_account=a.legacy_account,
                    enforce_intervals=a.enforce_intervals, ports_style=a.ports_style)
    standin = VastStandIn(seed=a.seed, n_offers=a.offers, api_key=a.api_key, host=a.host, port=a.port,
                          lifecycle=Lifecycle(created_s=a.created_s, loading_s=a.loading_s, destroy_s=a.destroy_s),
                          faults=faults, ssh_host=a.ssh_host, ssh_port=a.ssh_port, ssh_user=a.ssh_user,
                          authorized_keys=a.authorized_keys, root_dir=a.root_dir)
    with standin:
        print(f"vast stand-in listening on {standin.url}  (VAST_API_KEY={standin.api_key})", flush=True)
        until_stopped()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
