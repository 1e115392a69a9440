"""``python -m runform.agent``: one JSON request on stdin, one JSON response on stdout."""

from __future__ import annotations

import json
import sys

from runform.agent.ops import handle


def main() -> int:
    try:
        request = json.loads(sys.stdin.read() or "{}")
    except ValueError as exc:
        json.dump({"ok": False, "error": f"bad request: {exc}"}, sys.stdout)
        return 2
    response = handle(request)
    json.dump(response, sys.stdout)
    return 0 if response.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
