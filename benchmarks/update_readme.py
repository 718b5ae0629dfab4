"""Regenerate every README performance table in one run: accuracy per runtime and precision
(bench_accuracy), the engine (bench_engine) and live mode (bench_live), each with its own
--update-readme. Run it on a quiet machine (nothing else busy on the CPU): the tables record the
load average, and the figures of a shared CPU are not the machine's.

    python benchmarks/update_readme.py              # all three (about 40 minutes on the 2-core CPU)
    python benchmarks/update_readme.py --only engine,live
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = {"accuracy": "bench_accuracy.py", "engine": "bench_engine.py", "live": "bench_live.py"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {', '.join(BENCHMARKS)}")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown table(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.1f} before the run; other work on the CPU lowers every figure",
              file=sys.stderr)
    failed = []
    for name in names:
        t0 = time.monotonic()
        print(f"== {name}: benchmarks/{BENCHMARKS[name]} --update-readme", file=sys.stderr, flush=True)
        code = subprocess.call([sys.executable, str(REPO / "benchmarks" / BENCHMARKS[name]), "--update-readme"],
                               cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
        print(f"== {name}: exit status {code} after {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"not updated: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
