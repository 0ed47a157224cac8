"""benchmarks/suite_memory.py: the summed memory of a process tree."""

from __future__ import annotations

import json
import sys

from benchmarks import suite_memory

# A child holding ~300 MB that starts a grandchild holding ~200 MB; both wait, then exit 3.
_TREE = """
import subprocess, sys, time
a = bytearray(300_000_000)
g = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(200_000_000); time.sleep(3)"])
time.sleep(3)
g.wait()
sys.exit(3)
"""


def test_the_tree_is_summed_and_the_exit_code_kept(capsys):
    rc = suite_memory.run(["--every", "0.2", "--", sys.executable, "-c", _TREE])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["exit_code"] == 3
    # 300 + 200 MB held at once (bytearray zero-fills, so every page is touched), plus two
    # interpreters (~10 MB each): more than either process alone, less than 1 GB
    assert 0.5 <= doc["peak_summed_pss_gb"] < 1.0, doc
    assert doc["peak_summed_rss_gb"] >= doc["peak_summed_pss_gb"]
    sizes = sorted(r["pss_gb"] for r in doc["largest_at_peak"])
    assert 0.19 <= sizes[-2] <= 0.23 and 0.29 <= sizes[-1] <= 0.33, sizes
