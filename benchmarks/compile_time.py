"""How long compiling each example takes, on top of importing SymPy.

    python benchmarks/compile_time.py [--profile]

Each example is compiled in a fresh process (so nothing is cached): the
script reports the time to import SymPy and NumPy, to import bpcompile's
pipeline (Jinja2 and the templates' package), and to compile the example (the
first compile, which also loads and compiles the Jinja2 templates, and a
second one in the same process).  --profile adds the functions that take the
most time over all examples' first compiles.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy, sympy
t1 = time.perf_counter()
import bpcompile
from bpcompile import compiler
t2 = time.perf_counter()
profile = sys.argv[2] == "1"
if profile:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
bpcompile.compile_file(sys.argv[1])
t3 = time.perf_counter()
if profile:
    prof.disable()
    prof.dump_stats(sys.argv[3])
bpcompile.compile_file(sys.argv[1])
t4 = time.perf_counter()
print(json.dumps({"sympy": t1 - t0, "bpcompile": t2 - t1, "first": t3 - t2, "second": t4 - t3}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="store_true", help="show where the first compiles spend time")
    args = ap.parse_args()
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    stats = []
    print(f"{'example':28} {'import sympy+numpy':>19} {'import bpcompile':>17} "
          f"{'compile (first)':>16} {'compile (again)':>16}")
    for k, path in enumerate(examples):
        stat = f"/tmp/bpcompile_compile_{k}.prof"
        res = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if args.profile else "0", stat],
                             capture_output=True, text=True, cwd=ROOT, check=True)
        t = json.loads(res.stdout)
        stats.append(stat)
        print(f"{path.name:28} {t['sympy']:18.3f}s {t['bpcompile']:16.3f}s {t['first']:15.3f}s "
              f"{t['second']:15.3f}s")
    if args.profile:
        import pstats
        p = pstats.Stats(stats[0])
        for s in stats[1:]:
            p.add(s)
        p.sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
