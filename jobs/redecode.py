"""Decode an OSCAR archive in one step per image, optionally transcoding it to new rates.

Usage:
    python -m jobs.redecode --archive s3://bucket/archive --output s3://bucket/decoded --images
    python -m jobs.redecode --archive out/archive --output out/transcoded --rates 0.01,0.03

Reads the archive's Delta bitstreams table (latest version, or --archive-version N), with the
model the archive was written by unless --model says otherwise. --images writes PNGs (<image_id>_level<L>.png);
--rates re-encodes each decoded image (from --from-level, default the highest archived level)
and writes new bitstreams plus metrics measured against that decoded image. Reruns resume.
"""

from __future__ import annotations

import argparse
import sys

import jobs.common as cli
from pipeline.redecode import RedecodeConfig, archive_model, run_redecode


def build_parser() -> argparse.ArgumentParser:
    p = cli.job_parser("python -m jobs.redecode", __doc__)
    p.add_argument("--archive", required=True, help="output URI of an archive job")
    p.add_argument("--rates", default=None, help="transcode to these bpp / L<i> levels")
    p.add_argument("--archive-version", type=int, default=None,
                   help="the archive's Delta table version to read (default: the latest)")
    p.add_argument("--from-level", type=int, default=None, help="archived level to decode")
    p.add_argument("--images", action="store_true", help="write decoded PNGs under <output>/images")
    cli.add_common(p, model_default=None,
                   model_help="registered model name or model folder (default: the model the archive was written by)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.images and not args.rates:
        p.error("nothing to do: give --images and/or --rates")
    return cli.guarded("redecode", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    args.model = args.model or archive_model(args.archive, cli.storage(args))
    cfg = RedecodeConfig(archive=args.archive, archive_version=args.archive_version, rates=cli.parse_rates(args.rates),
                         from_level=args.from_level, images=args.images, **cli.common_config(args))
    cli.run_cli("redecode", cfg, run_redecode, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
