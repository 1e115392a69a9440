"""Join both sides and report metrics."""

import json
import os

from common import OUT, count_run

count_run("join")
left = (OUT / "left.txt").read_text().splitlines()
right = (OUT / "right.txt").read_text().splitlines()
(OUT / "joined.txt").write_text("\n".join(left + right) + "\n")
with open(os.environ["RUNFORM_METRICS_FILE"], "a") as f:
    f.write(json.dumps({"step": 1, "lines": len(left) + len(right)}) + "\n")
(OUT / "metrics.json").write_text(json.dumps({"lines": len(left) + len(right), "sides": 2}))
print("joined")
