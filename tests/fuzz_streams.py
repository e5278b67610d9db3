"""Mutated OSCAR streams: accidental damage, and forgeries whose CRC is recomputed.

    python -m tests.fuzz_streams --cases 500 --seed 0     # prints one JSON summary line

The decoder must end every case in a decoded image or a ``BitstreamError``, within a time and
memory bound. Each case runs under an alarm (a case still running after ``--case-seconds`` is
a hang); the summary counts outcomes per mutation kind and reports the slowest case and the
process's peak RSS. tests/test_hostile_streams.py runs it in a subprocess;
benchmarks/fuzz_bitstreams.py runs it longer.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
import zlib
from collections import Counter, defaultdict

import numpy as np


def varint(value: int, pad: int = 0) -> bytes:
    """LEB128; ``pad`` > 0 adds that many redundant zero groups (a non-minimal encoding)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            break
        out.append(byte | 0x80)
    if pad:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def fields(stream: bytes) -> dict:
    """A valid stream's header fields (parsed by hand: the forger's view)."""
    from oscar_model.bitstream import unpack

    c = unpack(stream)
    return {"version": c.version, "model_id": c.model_id, "level": c.rate_index, "flags": c.coding, "height": c.height,
            "width": c.width, "rms": bytes(c.rms_codes), "payload": c.payload}


def forge(f: dict, length: int | None = None, pads: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """Bytes of a stream with any field values, and a correct CRC."""
    body = b"OSCR" + bytes([f["version"] & 0xFF]) + bytes.fromhex(f["model_id"]) + bytes([f["level"] & 0xFF, f["flags"] & 0xFF])
    body += varint(f["height"], pads[0]) + varint(f["width"], pads[1]) + bytes([len(f["rms"]) & 0xFF]) + f["rms"]
    body += varint(len(f["payload"]) if length is None else length, pads[2]) + f["payload"]
    return body + zlib.crc32(body).to_bytes(4, "big")


def mutate(stream: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutation of ``stream``: (kind, bytes)."""
    f = fields(stream)
    kind = str(rng.choice(KINDS))
    data = bytearray(stream)
    if kind == "flip-bits":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(data)))
            data[i] ^= 1 << int(rng.integers(0, 8))
        return kind, bytes(data)
    if kind == "cut-or-grow":
        i = int(rng.integers(0, len(data)))
        return kind, bytes(data[:i]) if rng.random() < 0.5 else bytes(data[:i]) + rng.bytes(int(rng.integers(1, 64))) + bytes(data[i:])
    if kind == "size":
        big = [0, 1, 7, 4097, 16384, 100_000, 1_000_000, 2**34, int(rng.integers(1, 70000))]
        f["height"], f["width"] = int(rng.choice(big)), int(rng.choice(big))
    elif kind == "payload-length":
        return kind, forge(f, length=max(0, len(f["payload"]) + int(rng.integers(-40, 40))))
    elif kind == "level":
        f["level"] = int(rng.integers(0, 256))
    elif kind == "flags":
        f["flags"] = int(rng.integers(0, 256))
    elif kind == "rms":
        f["rms"] = rng.bytes(int(rng.choice([0, 1, 3, 4, 5, 200])))  # 4 is valid: another brightness
    elif kind == "payload":
        choice = rng.integers(0, 4)
        p = f["payload"]
        f["payload"] = [b"", rng.bytes(len(p)), p[: int(rng.integers(0, max(1, len(p))))], p + rng.bytes(int(rng.integers(4, 64)))][int(choice)]
    elif kind == "non-minimal-varint":
        pads = [int(v) for v in rng.integers(0, 3, 3)]
        pads[int(rng.integers(0, 3))] = int(rng.integers(1, 3))  # at least one field padded
        return kind, forge(f, pads=tuple(pads))
    elif kind == "model-or-version":
        if rng.random() < 0.5:
            f["model_id"] = rng.bytes(4).hex()
        else:
            f["version"] = int(rng.integers(0, 256))
    return kind, forge(f)


KINDS = ("flip-bits", "cut-or-grow", "size", "payload-length", "level", "flags", "rms", "payload",
         "non-minimal-varint", "model-or-version")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run(cases: int, seed: int, case_seconds: float) -> dict:
    from oscar_model.bitstream import BitstreamError
    from oscar_model.codec import OscarCodec
    from oscar_model.options import CodecOptions
    from tests.conftest import make_tiny_model

    # 4 Mpx: what a forged header may claim before decoding is refused
    codec = OscarCodec(make_tiny_model(), CodecOptions(max_pixels=4_000_000))
    rng = np.random.default_rng(seed)
    from skimage import data

    photo = data.astronaut()[:96, :160].copy()
    originals = codec.encode([photo], list(range(len(codec.ladder))))[0]
    outcomes: dict[str, Counter] = defaultdict(Counter)
    crashes, slowest = [], (0.0, "")
    signal.signal(signal.SIGALRM, _alarm)
    t_all = time.perf_counter()
    for i in range(cases):
        kind, data_ = mutate(originals[i % len(originals)], rng)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, case_seconds)
        try:
            codec.decode([data_])
            outcome = "decoded"
        except BitstreamError:
            outcome = "BitstreamError"
        except Hang:
            outcome = "hang"
        except Exception as e:  # anything else is a crash of the decoder
            outcome = "crash"
            crashes.append(f"{kind}: {type(e).__name__}: {e}"[:300])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - t0
        if seconds > slowest[0]:
            slowest = (seconds, kind)
        outcomes[kind][outcome] += 1
    total = Counter()
    for counter in outcomes.values():
        total.update(counter)
    return {
        "cases": cases, "seed": seed, "outcomes": dict(total), "by_kind": {k: dict(v) for k, v in sorted(outcomes.items())},
        "crashes": crashes[:20], "slowest_case_s": round(slowest[0], 3), "slowest_kind": slowest[1],
        "total_s": round(time.perf_counter() - t_all, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    print(json.dumps(run(args.cases, args.seed, args.case_seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
