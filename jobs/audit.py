"""Audit a corpus: OSCAR at every rate against JPEG, WebP and AVIF at the same bpp.

Usage:
    python -m jobs.audit --input s3://bucket/photos --output s3://bucket/audit \
        --codecs oscar-tiny,jpeg,webp,avif --rates 0.03,0.125

With no --input it audits scikit-image's sample photos (none of them in Kodak or BSDS500).

Per-image metrics go to metrics/ (one row per image, codec and level); summary.json, rd.png
and report.html (one page: plot + table) are written under --output. Reruns resume.
"""

from __future__ import annotations

import argparse
import sys

import jobs.common as cli
from pipeline.audit import AuditConfig, run_audit


def build_parser() -> argparse.ArgumentParser:
    p = cli.job_parser("python -m jobs.audit", __doc__)
    cli.add_input(p)
    p.add_argument("--codecs", default="oscar-tiny,jpeg,webp,avif",
                   help="comma-separated: the --model's name and any of jpeg, webp, avif; each classical codec is "
                        "matched per image to the bpp OSCAR reached (default oscar-tiny,jpeg,webp,avif)")
    p.add_argument("--rates", default=None,
                   help="comma-separated OSCAR levels as bpp (nearest level) or L<i>; default: the whole ladder")
    cli.add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.guarded("audit", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    cfg = AuditConfig(**cli.input_config(args), codecs=tuple(c.strip() for c in args.codecs.split(",")),
                      rates=cli.parse_rates(args.rates), **cli.common_config(args))
    summary = cli.run_cli("audit", cfg, run_audit, args.quiet)
    print(f"report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
