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

from jobs.common import (
    add_common,
    log_config,
    parse_rates,
    pool_options,
    print_summary,
    sample_photos_dir,
    setup_logging,
    storage,
)
from pipeline.build import AuditConfig, run_audit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.audit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=None, help="URI prefix or manifest (default: scikit-image's sample photos)")
    p.add_argument("--output", required=True)
    p.add_argument("--codecs", default="oscar-tiny,jpeg,webp,avif")
    p.add_argument("--rates", default=None)
    add_common(p)
    args = p.parse_args(argv)
    log = setup_logging()
    cfg = AuditConfig(input=args.input or sample_photos_dir(), output=args.output, codecs=tuple(c.strip() for c in args.codecs.split(",")),
                      rates=parse_rates(args.rates), model=args.model, device=args.device, storage=storage(args),
                      **pool_options(args))
    log_config(log, cfg)
    summary = run_audit(cfg, progress=not args.quiet)
    print_summary("audit", cfg.output, summary)
    print(f"report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
