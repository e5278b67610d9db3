"""A long run of the stream fuzzer: mutated and CRC-forged streams against the decoder.

Usage:
    python benchmarks/fuzz_bitstreams.py [--cases 10000] [--seed 1]

The same mutations as the test suite's 500 cases (tests/fuzz_streams.py: bit flips, cuts and
insertions without a CRC fix; forged sizes, payload lengths, levels, flags, norms, payloads,
non-minimal varints, model ids and versions with a correct CRC), on the tiny test model with a
4 Mpx decode limit. Prints a table of outcomes per mutation kind and writes fuzz_bitstreams.json.
Every case must end in a decoded image or a BitstreamError; a crash or a hang is a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz_streams import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--case-seconds", type=float, default=10.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    summary = run(args.cases, args.seed, args.case_seconds)
    summary["command"] = "python benchmarks/fuzz_bitstreams.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "fuzz_bitstreams.json").write_text(json.dumps(summary, indent=1))
    outcomes = ("decoded", "BitstreamError", "crash", "hang")
    print("| mutation | " + " | ".join(outcomes) + " |\n|---|" + "---|" * len(outcomes))
    for kind, counts in summary["by_kind"].items():
        print(f"| {kind} | " + " | ".join(str(counts.get(o, 0)) for o in outcomes) + " |")
    print("| all | " + " | ".join(str(summary["outcomes"].get(o, 0)) for o in outcomes) + " |")
    print(f"{summary['cases']} cases in {summary['total_s']} s; slowest {summary['slowest_case_s']} s "
          f"({summary['slowest_kind']}); peak RSS {summary['peak_rss_mb']} MB")
    return 1 if summary["crashes"] or summary["outcomes"].get("hang") else 0


if __name__ == "__main__":
    sys.exit(main())
