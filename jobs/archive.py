"""Archive an image corpus with OSCAR: every image at every requested rate, verified.

Usage:
    python -m jobs.archive --output out/archive                       # demo on bundled sample photos
    python -m jobs.archive --input s3://bucket/photos --output s3://bucket/archive --rates 0.03,0.125
    python -m jobs.archive --input manifest.parquet --output gs://bucket/archive --no-verify
    python -m jobs.archive --input s3://bucket/shards/ --output s3://bucket/archive --rates L0   # WebDataset tars
    python -m jobs.archive --input s3://bucket/hf-export/ --image-column image --output ...     # Parquet with images
    python -m jobs.archive --input s3://bucket/photos --output s3://bucket/archive --target ms_ssim>=0.9

Input: loose images under a prefix (s3://, gs://, local), WebDataset .tar shards, Parquet files
with an image-bytes column, or a Parquet/CSV manifest with a 'uri' column. Writes the Delta
Lake tables bitstreams/, metrics/, errors/ and work_units/ plus run_manifest.json under
--output, committing a window every --commit-units work units or --commit-minutes. Bad inputs
(corrupt, truncated, empty, not an image, decompression bombs, broken tar members) become rows
in the errors table; the job goes on. Running the same command again resumes: committed work
units are skipped. With RAY_ADDRESS set (or under `ray job submit`) it runs on that cluster.
"""

from __future__ import annotations

import argparse
import sys

import jobs.common as cli
from pipeline.archive import ArchiveConfig, run_archive


def build_parser() -> argparse.ArgumentParser:
    p = cli.job_parser("python -m jobs.archive", __doc__)
    cli.add_input(p)
    p.add_argument("--rates", default=None, help="comma-separated bpp (nearest level) or L<i> levels; default: whole ladder")
    p.add_argument("--no-verify", action="store_true", help="skip decode + metrics")
    p.add_argument("--images", action="store_true", help="also write reconstructions as PNG under <output>/images")
    p.add_argument("--target", default=None,
                   help="keep each image at the cheapest level whose decode meets this: ms_ssim>=0.9, psnr>=30, "
                        "ssimulacra2>=60, flip<=0.1, butteraugli<=3 (where libjxl's tool is installed), lpips<=0.2 or "
                        "dists<=0.15 (where their weights are installed); --rates then names the candidate levels")
    p.add_argument("--codecs", default=None,
                   help="with --target: the model and classical codecs that compete per image, e.g. "
                        "oscar-tiny,avif,jxl (also downscaled: avif@1/2); each image keeps the smallest file that meets "
                        "the target, whichever codec wrote it (default: the model alone)")
    p.add_argument("--max-bpp", type=float, default=None,
                   help="with --target: only levels at or below this many bits per pixel (per image) are candidates")
    p.add_argument("--keep-all", action="store_true",
                   help="with --target: also keep the other levels' streams (the bitstreams table's 'chosen' marks the kept one)")
    cli.add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.guarded("archive", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    cfg = ArchiveConfig(**cli.input_config(args), rates=cli.parse_rates(args.rates), verify=not args.no_verify,
                        images=args.images, target=args.target, max_bpp=args.max_bpp, keep_all=args.keep_all,
                        codecs=tuple(c.strip() for c in (args.codecs or "").split(",") if c.strip()),
                        **cli.common_config(args))
    cli.run_cli("archive", cfg, run_archive, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
