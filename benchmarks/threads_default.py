"""Is the default of ``--threads`` right on a shared machine? ``oscar decode`` on an idle and a busy box.

Usage:
    python benchmarks/threads_default.py [--image kodim23.png] [--level 3] [--repeats 3]

The command's default is :func:`oscar_model.options.free_cores`: the cores the one-minute load
average leaves idle. This times the whole ``oscar decode`` process (ONNX Runtime, the default on
a CPU) with ``--threads 1``, with every core (``--threads N``) and with the default, best of
``--repeats``, first on an idle machine, then beside one busy process per core but one (``yes``
loops); each case waits ``--settle-s`` first, so the load average reflects it. Writes
benchmarks/results/threads_default.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _decode_s(stream: Path, out: Path, threads: int | None, repeats: int) -> float:
    args = [sys.executable, "-m", "oscar_model.cli", "decode", str(stream), "-o", str(out)]
    if threads is not None:
        args += ["--threads", str(threads)]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def _settings(cores: int) -> dict[str, int | None]:
    return {"--threads 1": 1, f"--threads {cores}": cores, "default": None}


def main(argv: list[str] | None = None) -> int:
    from oscar_model.options import free_cores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default=str(ROOT.parent / "shared" / "datasets" / "kodak" / "kodim23.png"))
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settle-s", type=float, default=60.0, help="how long the busy loops run before timing")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="oscar-threads-"))
    stream = work / "in.osc"
    subprocess.run([sys.executable, "-m", "oscar_model.cli", "encode", args.image, "-o", str(stream), "--level",
                    str(args.level)], check=True, capture_output=True)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for busy in (0, max(1, cores - 1)):
        loops = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(busy)]
        try:
            time.sleep(args.settle_s)  # the load average follows what runs now (idle, or the loops)
            row = {"busy_processes": busy, "load_average": round(os.getloadavg()[0], 2),
                   "default_threads": free_cores()}
            row.update({name: _decode_s(stream, work / "out.png", t, args.repeats) for name, t in _settings(cores).items()})
            rows.append(row)
        finally:
            for loop in loops:
                loop.kill()
    result = {"image": Path(args.image).name, "level": args.level, "cores": cores, "rows": rows,
              "command": "python benchmarks/threads_default.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "threads_default.json").write_text(json.dumps(result, indent=1))
    names = list(_settings(cores))
    print("| busy processes | load average | default threads | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['busy_processes']} | {r['load_average']} | {r['default_threads']} | "
              + " | ".join(f"{r[n]} s" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
