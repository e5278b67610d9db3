"""Decode an OSCAR archive in one step per image, optionally transcoding it to new rates.

Usage:
    python -m jobs.redecode --archive s3://bucket/archive --output s3://bucket/decoded --images
    python -m jobs.redecode --archive out/archive --output out/transcoded --rates 0.01,0.03

Reads the archive's committed bitstreams table. --images writes PNGs (<image_id>_level<L>.png);
--rates re-encodes each decoded image (from --from-level, default the highest archived level)
and writes new bitstreams plus metrics measured against that decoded image. Reruns resume.
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
    setup_logging,
    storage,
)
from pipeline.build import RedecodeConfig, run_redecode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.redecode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", required=True, help="output URI of an archive job")
    p.add_argument("--output", required=True)
    p.add_argument("--rates", default=None, help="transcode to these bpp / L<i> levels")
    p.add_argument("--from-level", type=int, default=None, help="archived level to decode")
    p.add_argument("--images", action="store_true", help="write decoded PNGs under <output>/images")
    add_common(p)
    args = p.parse_args(argv)
    if not args.images and not args.rates:
        p.error("nothing to do: give --images and/or --rates")
    log = setup_logging()
    cfg = RedecodeConfig(archive=args.archive, output=args.output, rates=parse_rates(args.rates), from_level=args.from_level,
                         images=args.images, model=args.model, device=args.device, storage=storage(args),
                         **pool_options(args))
    log_config(log, cfg)
    print_summary("redecode", cfg.output, run_redecode(cfg, progress=not args.quiet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
