"""Maintain a job's output: compact small files, vacuum what no version needs.

Usage:
    python -m jobs.maintain --output s3://bucket/archive                 # compact + vacuum (7-day retention)
    python -m jobs.maintain --output out/archive --retention-hours 0     # also drop old versions' files now

Compaction (delta-rs optimize) rewrites each table's small files into files of about
--target-mb; readers at older versions keep working until vacuum. Vacuum deletes files no
version within the retention needs, and files a killed run wrote but never committed (they
were never visible). It first removes a torn window (see pipeline.tables.delta). It takes the output's
lease, so it refuses to run while a job writes there.
"""

from __future__ import annotations

import argparse
import json
import sys

import jobs.common as cli
from pipeline.tables.maintain import maintain


def build_parser() -> argparse.ArgumentParser:
    p = cli.job_parser("python -m jobs.maintain", __doc__)
    p.add_argument("--output", required=True, help="a job's output URI (local folder, s3://...)")
    p.add_argument("--target-mb", type=int, default=256, help="compaction's target file size in MB (default 256)")
    p.add_argument("--retention-hours", type=float, default=168.0,
                   help="vacuum keeps files that versions of the last N hours need (default 168: time travel for a week)")
    p.add_argument("--no-compact", action="store_true", help="vacuum only")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--region", default=None, help="S3 region (default: $AWS_DEFAULT_REGION)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.guarded("maintain", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    report = maintain(args.output, cli.storage(args), compact=not args.no_compact, target_mb=args.target_mb,
                      retention_hours=args.retention_hours)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
