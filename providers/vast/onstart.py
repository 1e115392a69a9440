"""The onstart script: a small, idempotent bootstrap that Vast runs on every container start.

It (1) makes runform's non-secret ``RUNFORM_*`` variables visible to SSH shells (Vast puts
create-time env only into PID 1's environment), (2) makes sure sshd and python3 exist,
(3) starts a watchdog that ends the workload at ``max_duration`` and then gives the
instance back, and (4) touches the readiness sentinel ``<root>/.runform/vast/onstart.done``.

The watchdog keeps an absolute deadline in ``<root>/.runform/vast/deadline`` (so a restart
does not extend it). At the deadline it stops every process but PID 1 and sshd (TERM; KILL for
whatever is left after 30 s, with no wait when nothing is left), then calls the Vast API from
inside the container with the instance's own ``CONTAINER_API_KEY`` (injected by Vast; never
written by runform): ``DELETE /instances/$CONTAINER_ID/``, or, if that is refused,
``PUT {"state": "stopped"}``. What still bills: nothing after a delete;
storage after a stop (until ``runform destroy``); GPU time as well if both calls fail.

No secret is ever in this script: :func:`check_onstart` enforces that, and the size limit.
"""

from __future__ import annotations

from collections.abc import Iterable

from runform.errors import ProviderError

ONSTART_LIMIT = 4048  # Vast rejects longer onstart/args (reference §4)
SENTINEL = ".runform/vast/onstart.done"  # relative to the run root

_SCRIPT = r"""#!/bin/bash
# runform onstart (idempotent; runs on every container start). No secrets in here.
while IFS= read -r -d '' kv; do case "$kv" in RUNFORM_*) printf 'export %q\n' "$kv";; esac
done </proc/1/environ >/etc/profile.d/runform.sh 2>/dev/null
. /etc/profile.d/runform.sh 2>/dev/null
R="${RUNFORM_ROOT:-/root/runform}"; S="$R/.runform/vast"; mkdir -p "$S"
exec >>"$S/onstart.log" 2>&1
echo "$(date -u +%FT%TZ) onstart"
if ! command -v sshd >/dev/null || ! command -v python3 >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openssh-server python3 python3-venv || true
fi
mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
pgrep -x sshd >/dev/null || /usr/sbin/sshd || true
D="${RUNFORM_MAX_DURATION_S%.*}"
if [ -n "$D" ]; then
  [ -s "$S/deadline" ] || echo $(( $(date +%s) + D )) >"$S/deadline"
  cat >"$S/watchdog.sh" <<'WATCHDOG'
S="$1"
while [ "$(date +%s)" -lt "$(cat "$S/deadline")" ]; do sleep 20; done
echo "$(date -u +%FT%TZ) max_duration reached: ending the workload"
touch "$S/max_duration_reached"
mine="$$ $PPID"
others() { for d in /proc/[0-9]*; do p=${d#/proc/}
  case " 1 $mine $BASHPID " in *" $p "*) continue;; esac
  s=$(cat $d/stat 2>/dev/null) || continue; s=${s##*) }; [ "${s%% *}" = Z ] && continue
  [ "$(cat $d/comm 2>/dev/null)" = sshd ] || echo "$p"; done; }
stop() { for p in $(others); do kill "-$1" "$p" 2>/dev/null; done; }
stop TERM; n=0; while [ $n -lt 30 ] && [ -n "$(others)" ]; do sleep 1; n=$((n+1)); done; stop KILL
python3 - "${RUNFORM_VAST_URL:-https://console.vast.ai}" <<'PY'
import json, sys, urllib.request
env = dict(kv.split("=", 1) for kv in open("/proc/1/environ").read().split("\0") if "=" in kv)
key, cid = env.get("CONTAINER_API_KEY"), env.get("CONTAINER_ID")
for method, body in (("DELETE", {}), ("PUT", {"state": "stopped"})):
    req = urllib.request.Request(f"{sys.argv[1]}/api/v0/instances/{cid}/", method=method,
                                 data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=60)
        print(method, "ok")
        break
    except Exception as exc:
        print(method, "failed:", type(exc).__name__)
PY
WATCHDOG
  P=$(cat "$S/watchdog.pid" 2>/dev/null)
  if [ -z "$P" ] || ! kill -0 "$P" 2>/dev/null; then
    nohup setsid bash "$S/watchdog.sh" "$S" >>"$S/watchdog.log" 2>&1 </dev/null &
    echo $! >"$S/watchdog.pid"
  fi
fi
touch "$S/onstart.done"
"""


def build_onstart() -> str:
    """The onstart script (static: everything variable reaches it through ``RUNFORM_*`` env)."""
    return _SCRIPT


def check_onstart(script: str, secrets: Iterable[str] = ()) -> str:
    """Refuse an onstart that Vast would reject (size) or that carries a secret."""
    if len(script) >= ONSTART_LIMIT:
        raise ProviderError(f"the onstart script is {len(script)} characters; Vast accepts fewer than {ONSTART_LIMIT}")
    for s in secrets:
        if s and len(s) >= 4 and s in script:
            raise ProviderError("the onstart script would contain a secret; refusing to send it",
                                hint="secrets reach the machine through secrets.env_file only")
    return script


def check_env(env: dict[str, str]) -> dict[str, str]:
    """Vast's limits on create-time env: each entry ≤ 256 characters, 32768 in all."""
    total = 0
    for k, v in env.items():
        size = len(k) + len(v) + 1
        if size > 256:
            raise ProviderError(f"compute.env.{k}: Vast allows 256 characters per variable, this one has {size}")
        total += size
    if total > 32768:
        raise ProviderError(f"compute.env: Vast allows 32768 characters of env in all, this has {total}")
    return env
