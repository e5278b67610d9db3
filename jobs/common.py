"""Argument helpers shared by the job entry points."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from oscar_model.cli import one_line
from oscar_model.options import CodecOptions, add_codec_arguments
from pipeline.config import ActorConfig
from pipeline.storage import StorageOptions

SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry", "motorcycle_left")


class JobError(Exception):
    """A problem the user can fix, reported as one line and exit code 2."""


# What a user can cause and fix: reported in one line, never as a traceback.
USER_ERRORS = (JobError, FileNotFoundError, NotADirectoryError, FileExistsError, ValueError, PermissionError,
               ConnectionError, TimeoutError)


def guarded(job: str, fn: Callable[[], int]) -> int:
    """Runs a job's main; a user's error becomes one line on stderr and exit code 2."""
    from pipeline.tables.delta import OutputBusy

    try:
        return fn()
    except (*USER_ERRORS, OutputBusy) as e:
        print(f"{job}: error: {one_line(e, limit=1500)}", file=sys.stderr)  # job errors may list a ladder
        return 2


def parse_rates(text: str | None) -> tuple[float | int, ...] | None:
    """'0.03,0.125' -> (0.03, 0.125) bpp; 'L2,L4' -> levels (2, 4); None or 'all' -> whole ladder."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    out: list[float | int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(int(part[1:]) if part.upper().startswith("L") else float(part))
        except ValueError:
            raise JobError(f"--rates {text!r}: {part!r} is neither a bpp (0.03) nor a level (L2)") from None
    return tuple(out)


def job_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def common_config(args: argparse.Namespace) -> dict:
    """The :class:`~pipeline.config.JobConfig` fields every job's CLI sets the same way."""
    if args.slice_images < 1:
        raise JobError(f"--slice-images must be >= 1, got {args.slice_images}")
    return {"output": resolve_output(args.output), "model": args.model, "device": args.device, "storage": storage(args),
            "commit_units": args.commit_units, "commit_minutes": args.commit_minutes, "rows_per_file": args.rows_per_file,
            "slice_images": args.slice_images,
            "ray_address": args.ray_address, "verbose": args.verbose,
            "codec": CodecOptions.from_args(args), **pool_options(args),
            **({"metrics": parse_metrics(args.metrics)} if args.metrics else {})}  # else the job's own default


def resolve_output(output: str) -> str:
    """A relative local output as an absolute path: under ``ray job submit --working-dir .`` the
    driver's working folder is Ray's temporary copy, and the summary must say where it really went."""
    if "://" in output or os.path.isabs(output):
        return output
    return os.path.abspath(output)


def add_input(p: argparse.ArgumentParser) -> None:
    """The input flags of the jobs over source images (archive, audit)."""
    p.add_argument("--input", default=None,
                   help="a prefix of images, WebDataset .tar shards or Parquet files with image bytes; a .tar list "
                        "(comma-separated or {000..007}); or a .parquet/.csv manifest with a 'uri' column "
                        "(default: scikit-image's sample photos)")
    p.add_argument("--image-column", default=None,
                   help="Parquet inputs: the column holding image bytes (binary, or a {bytes, path} struct); "
                        "default: the only such column")
    p.add_argument("--key-column", default=None,
                   help="Parquet inputs: the column naming each image (default: key, __key__ or id, else the row number)")
    p.add_argument("--allow-empty", action="store_true",
                   help="succeed on an input that holds no file (default: an empty input is an error, exit 2)")
    p.add_argument("--group-size", type=int, default=64,
                   help="loose files (or manifest entries) per work unit, on average; a shard is always one unit "
                        "(default 64)")


def input_config(args: argparse.Namespace) -> dict:
    """The :class:`~pipeline.config.ImagesConfig` fields of :func:`add_input`'s flags."""
    return {"input": args.input or sample_photos_dir(), "image_column": args.image_column, "key_column": args.key_column,
            "group_size": args.group_size, "allow_empty": args.allow_empty}


def run_cli(job: str, cfg, run, quiet: bool) -> dict:
    """Runs the job (a progress bar unless ``quiet``), prints its summary line; the config goes to
    the debug log and to run_manifest.json."""
    log_config(setup_logging(getattr(cfg, "verbose", False)), cfg)
    summary = run(cfg, progress=not quiet)
    print_summary(job, cfg.output, summary)
    return summary


def add_common(p: argparse.ArgumentParser,
               model_help: str = "registered model name, model folder, or a folder on object storage (s3://...; "
                                 "fetched once per node and checked by its hash) (default oscar-tiny)",
               model_default: str | None = "oscar-tiny") -> None:
    p.add_argument("--output", required=True, help="output URI (local folder, s3://..., gs://...)")
    p.add_argument("--model", default=model_default, help=model_help)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda where an actor has one)")
    p.add_argument("--actors", type=int, default=2,
                   help="actors in the encode(+verify) pool; on CPU each actor runs one torch thread, so one actor per "
                        "core keeps every core busy (default 2)")
    p.add_argument("--separate-pools", action="store_true",
                   help="encode and decode in separate actor pools (default: one fused pool, fastest on CPU)")
    p.add_argument("--decode-actors", type=int, default=None, help="actors in the decode pool with --separate-pools (default: --actors)")
    p.add_argument("--actor-cpus", type=float, default=0.25,
                   help="CPUs Ray reserves per actor (fractional is fine; each CPU actor runs one torch thread). "
                        "Pools must leave 0.5 CPU for reads and writes")
    p.add_argument("--actor-gpus", type=float, default=0.0, help="GPUs per actor (0 = CPU; fractional is fine)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per actor call; same-size images are encoded and decoded together (default 8)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--region", default=None, help="S3 region (default: $AWS_DEFAULT_REGION)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_codec_arguments(p)
    p.add_argument("--metrics", default=None,
                   help="comma-separated quality metrics measured on every decode: psnr, ms_ssim, ssimulacra2, flip, "
                        "butteraugli, lpips, dists, or 'all' (every one that runs here). Default: all for the audit, "
                        "psnr,ms_ssim for archive and redecode (the perceptual ones cost about a second per megapixel "
                        "each); a --target's metric is always measured")
    p.add_argument("--verbose", action="store_true", help="Ray's own progress bars and logs as well as this job's")
    p.add_argument("--ray-address", default=None,
                   help="the Ray cluster to run on (host:port, ray://host:10001); 'local' starts a fresh local Ray "
                        "(default: $RAY_ADDRESS, else local). An address that does not answer fails within seconds")
    p.add_argument("--commit-units", type=int, default=64,
                   help="commit a window of results after this many complete work units (shards, file groups); a "
                        "killed driver loses at most the open window (default 64)")
    p.add_argument("--commit-minutes", type=float, default=10.0,
                   help="... or after this many minutes, whichever comes first (default 10)")
    p.add_argument("--rows-per-file", type=int, default=16384,
                   help="table rows (streams, metrics or error rows) per write task, which writes one data file per "
                        "table: this sizes the files (default 16384)")
    p.add_argument("--slice-images", type=int, default=16384,
                   help="run the work as Ray datasets of about this many images each (whole work units; a shard counts "
                        "as 1024): bounds Ray Data's per-block statistics on the driver; each slice reloads the model in "
                        "its actors (default 16384)")


def parse_metrics(text: str | None) -> tuple[str, ...] | None:
    """``--metrics psnr,ms_ssim`` -> the names (checked by the job's plan); None: every one available."""
    if text is None or text.strip() == "all":
        return None
    return tuple(m.strip().replace("-", "_") for m in text.split(",") if m.strip())


def actor_config(args: argparse.Namespace, decode: bool = False) -> ActorConfig:
    n = max(1, (args.decode_actors or args.actors) if decode else args.actors)
    return ActorConfig(min_actors=n, max_actors=n, num_cpus=args.actor_cpus, num_gpus=args.actor_gpus, batch_size=args.batch_size)


def pool_options(args: argparse.Namespace) -> dict:
    """The fields every job config shares: fused or separate pools, their sizes, encoder effort."""
    return {"fused": not args.separate_pools, "encode": actor_config(args), "decode": actor_config(args, decode=True),
            "refine_steps": args.refine}


def storage(args: argparse.Namespace) -> StorageOptions:
    return StorageOptions(endpoint_url=args.endpoint_url, region=args.region)


def sample_photos_dir() -> str:
    """scikit-image's bundled sample photos, written once as PNGs to ~/.cache/oscar/samples."""
    import numpy as np
    from PIL import Image

    try:
        from skimage import data
    except ImportError as e:
        raise SystemExit("no --input given and scikit-image is not installed: pip install 'oscar-transcoder[samples]'") from e
    folder = Path.home() / ".cache" / "oscar" / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_PHOTOS:
        target = folder / f"{name}.png"
        if target.exists():
            continue
        try:
            arr = getattr(data, name)()
        except Exception:  # some samples need a download, which this machine may not have
            continue
        if isinstance(arr, tuple):
            arr = arr[0]
        Image.fromarray(np.asarray(arr)).save(target)
    return str(folder)


def setup_logging(verbose: bool = False) -> logging.Logger:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("ray", "filelock", "werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose and noisy == "ray" else logging.WARNING)
    return logging.getLogger("oscar.jobs")


def log_config(log: logging.Logger, cfg) -> None:
    from dataclasses import asdict

    log.debug("config %s", json.dumps(asdict(cfg), default=str))


def _target_lines(t: dict | None) -> list[str]:
    if not t:
        return []
    fixed = t["fixed_level"]
    versus = (f"the cheapest fixed level meeting it on as many images (L{fixed['level']}) would spend {fixed['bytes']:,} "
              f"bytes: {100 * t['saving']:.1f}% saved" if fixed else "no fixed level meets it on as many images")
    images = t["images"] or 1
    kept = ", ".join(f"L{lv} {100 * n / images:.0f}%" for lv, n in t["chosen_levels"].items()) or "-"
    lines = [f"target {t['target']}: met on {t['met']} of {t['images']} images ({100 * t['share_met']:.1f}%); "
             f"{t['decodes_per_image']} decodes per image; {versus}",
             f"levels kept: {kept} of the images"]
    mix = t.get("codecs")
    if mix:
        shares = ", ".join(f"{c} {100 * n / images:.0f}%" for c, n in mix["kept"].items())
        alone = "; ".join(f"{c} alone {e['bytes']:,} bytes, met on {e['met']}" for c, e in mix["alone"].items())
        lines += [f"codecs kept: {shares} of the images; the mix: {t['bytes']:,} bytes, met on {t['met']}; {alone}",
                  f"met only thanks to the mix: {mix['met_only_thanks_to_the_mix']} images"]
    return lines


def print_summary(job: str, output: str, summary: dict) -> None:
    """The job's result in a few lines: counts, what the bytes are, each level's rate and quality, the
    target's outcome, every table written, and where the failures are."""
    out = output.rstrip("/")
    quality = summary.get("mean_quality_per_level", {})
    levels = []
    for level, bpp in summary.get("mean_bpp_per_level", {}).items():
        q = quality.get(level) or quality.get(str(level)) or {}
        measured = "".join([f", {q['psnr']:.2f} dB" if q.get("psnr") is not None else "",
                            f", MS-SSIM {q['ms_ssim']:.4f}" if q.get("ms_ssim") is not None else ""])
        levels.append(f"L{level} {bpp:.4f} bpp{measured}")
    lines = [
        f"{job}: {summary['images_ok']} images ok, {summary['images_failed']} failed; {summary['units_done']} work units "
        f"done, {summary.get('units_skipped_already_done', 0)} already done; {summary['wall_seconds']:.1f} s",
        *([f"streams written: {summary['bitstream_bytes']:,} bytes (whole streams as stored: an OSCAR stream's "
            f"header, indices and CRC included)"] if summary["bitstream_bytes"] else []),
        *([f"per level (means over the images): {'; '.join(levels)}"] if levels else []),
        *_target_lines(summary.get("target")),
    ]
    if summary["images_failed"]:
        n = summary["images_failed"]
        lines.append(f"{n} input{'' if n == 1 else 's'} failed: one row each, with the stage and the reason, in {out}/errors/")
    lines.append(f"Delta tables: {out}/{{bitstreams,metrics,errors,bd_rates,work_units}}/  manifest: {out}/run_manifest.json")
    print("\n".join(lines))
