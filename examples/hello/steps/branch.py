"""One side of the diamond: transform the prepared greetings."""

import os
import sys

from common import OUT, count_run

side = sys.argv[1]
count_run(side)
lines = (OUT / "prepared.txt").read_text().splitlines()
if os.environ.get("SHOUT"):
    lines = [line.upper() for line in lines]
(OUT / f"{side}.txt").write_text("\n".join(f"[{side}] {line}" for line in lines) + "\n")
print(f"{side}: {len(lines)} lines")
