"""Audit a corpus: OSCAR at every rate against JPEG, WebP, AVIF and JPEG XL: BD-rates, RD curves, crops.

Usage:
    python -m jobs.audit --input s3://bucket/photos --output s3://bucket/audit \
        --codecs oscar-tiny,jpeg,webp,avif,jxl,avif@1/4 --rates 0.03,0.125

With no --input it audits scikit-image's sample photos (none of them in Kodak or BSDS500).

Per-image metrics go to metrics/ (one row per image, codec and setting: OSCAR's levels, each
classical codec's quality sweep, and each classical codec matched to OSCAR's bpp) and
bd_rates/ (per image and classical codec, committed with them); summary.json (with the
BD-rates), rd.png and report.html are written under --output.
Reruns resume; --report-only rebuilds the report from the committed tables.
"""

from __future__ import annotations

import argparse
import sys

import jobs.common as cli
from pipeline.audit import AuditConfig, rebuild_report, run_audit


def build_parser() -> argparse.ArgumentParser:
    p = cli.job_parser("python -m jobs.audit", __doc__)
    cli.add_input(p)
    p.add_argument("--codecs", default="oscar-tiny,jpeg,webp,avif,jxl",
                   help="comma-separated: the --model's name and any of jpeg, webp, avif, jxl, each also as CODEC@1/K "
                        "(avif@1/4: encoded at 1/K of each side, upscaled back with Lanczos, to reach rates below the "
                        "codec's floor); each classical codec is run over its quality sweep and matched per image to "
                        "the bpp OSCAR reached (default oscar-tiny,jpeg,webp,avif,jxl)")
    p.add_argument("--rates", default=None,
                   help="comma-separated OSCAR levels as bpp (nearest level) or L<i>; default: the whole ladder "
                        "(BD-rates need at least two)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild summary.json, rd.png and report.html from the committed tables of --output "
                        "(no encoding; --input is not needed)")
    cli.add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.guarded("audit", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if args.report_only:
        cfg = AuditConfig(input="", **cli.common_config(args))
        print(f"report: {rebuild_report(cfg)}")
        return 0
    cfg = AuditConfig(**cli.input_config(args), codecs=tuple(c.strip() for c in args.codecs.split(",")),
                      rates=cli.parse_rates(args.rates), **cli.common_config(args))
    summary = cli.run_cli("audit", cfg, run_audit, args.quiet)
    print(f"report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
