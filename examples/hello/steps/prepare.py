"""Read the dataset (through its link) and write one greeting per name."""

import os
import sys

from common import OUT, count_run

count_run("prepare")
word = sys.argv[1] if len(sys.argv) > 1 else "hello"
names = open("data/names.txt").read().split()
assert os.environ.get("HELLO_TOKEN"), "the secret reaches the stage through its environment"
(OUT / "prepared.txt").write_text("".join(f"{word} {n}\n" for n in names))
print(f"prepared {len(names)} greetings")
