"""mkdocs hook: the pages that are made from the code and the measurements, so they cannot drift.

* ``<!-- columns -->`` (tables.md): every column of every output table, from
  :mod:`pipeline.tables.schema` (the one place the tables are declared).
* ``<!-- results -->`` (results.md): every JSON file under ``benchmarks/results/``, each with the
  command that made it (its own ``command`` field, or :data:`COMMANDS`).
* ``<!-- cpu_runtime -->`` (runtime.md): the runtimes side by side, from ``cpu_runtime.json``.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
COMMANDS = {
    "corpus_scale_rss": "python benchmarks/corpus_scale.py rss --images 10000,80000",
    "corpus_scale_resume": "python benchmarks/corpus_scale.py resume --keys 1000000 --window 1000 [--s3]",
    "fuzz_bitstreams": "python benchmarks/fuzz_bitstreams.py",
    "norm_precision": "python benchmarks/norm_precision.py",
    "pipeline_throughput": "python benchmarks/pipeline_throughput.py",
    "report_scale": "python benchmarks/report_scale.py --images 10000,100000,1000000",
    "rd_kodak": "python benchmarks/rd_kodak.py",
    "stage_outputs": "python benchmarks/stage_outputs.py",
    "thin_images": "python benchmarks/thin_images.py [--no-fold --repeats 1]",
}
MAX_ROWS = 30


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)[:80]}`"
    return html.escape(str(value)).replace("|", "\\|")


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], dict | list)))
    if not keys:
        return ""
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines.append(f"\n({len(rows) - MAX_ROWS} more rows in the file)")
    return "\n".join(lines) + "\n"


def _result(path: Path) -> str:
    data = json.loads(path.read_text())
    stem = path.stem.split("-")[0]
    command = (data.get("command") if isinstance(data, dict) else None) or COMMANDS.get(stem, "see the file")
    out = [f"### `{path.name}`\n", f"Made by `{command}`.\n"]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        out.append(_table(data))
    elif isinstance(data, dict):
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list) and k != "command"}
        if scalars:
            out.append(_table([scalars]))
        for key, value in data.items():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                out.append(f"**{key}**\n\n" + _table(value))
    return "\n".join(out)


def results_markdown() -> str:
    return "\n".join(_result(p) for p in sorted(RESULTS.glob("*.json")))


def cpu_runtime_markdown() -> str:
    """The tables of ``benchmarks/cpu_runtime.py``'s JSON, in the words of the runtime page."""
    path = RESULTS / "cpu_runtime.json"
    if not path.exists():
        return "*Not measured yet: run `python benchmarks/cpu_runtime.py`.*\n"
    d = json.loads(path.read_text())
    cmd = d["whole_commands"]
    out = [f"Made by `{d['command']}` on a {d['cpus']}-core x86 CPU, {d['image']} at level {d['level']}. "
           f"The graphs' one-time export took {d['one_time_export_s']} s and holds {d['export_mb']} MB.\n",
           "**Whole commands**, from process start to exit (best of "
           f"{len(cmd['onnxruntime']['decode']['runs_s'])}, the runtimes alternating):\n",
           "| command | onnxruntime, s | torch, s | onnxruntime / torch | peak RSS, MB (onnxruntime / torch) |",
           "|---|---|---|---|---|"]
    for name in ("encode", "decode"):
        o, t = cmd["onnxruntime"][name], cmd["torch"][name]
        out.append(f"| `oscar {name}` | {o['best_s']} | {t['best_s']} | {cmd[f'{name}_ratio_onnx_over_torch']} | "
                   f"{o['peak_rss_mb']} / {t['peak_rss_mb']} |")
    out.append(f"\nThe two runtimes wrote {'the same' if cmd['streams_identical'] else 'different'} stream bytes.\n")
    agree = RESULTS / "runtime_agreement.json"
    if agree.exists():
        a = json.loads(agree.read_text())
        lowest = "identical decodes" if a["lowest_psnr_between_decodes"] is None else (
            f"{a['lowest_psnr_between_decodes']} dB at the lowest")
        out.append(f"**Agreement** (`{a['command']}`): of {a['streams']} streams ({a['images']} BSDS500 test photos x "
                   f"{a['levels']} levels), {a['streams_with_the_same_bytes']} had the same bytes in both runtimes. "
                   f"The two runtimes' decodes of one stream agree to {lowest} (PSNR), and their MS-SSIM against the "
                   f"original differs by {a['largest_ms_ssim_difference']} at most.\n")
    out += ["**The codec alone** (a fresh process per row; encode on 1 thread, decode on 2):\n",
            "| runtime | size | tiled | start-up, s | encode, s/Mpx | decode, s/Mpx | peak RSS, MB |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {r['runtime']} | {r['size']} | {'yes' if r['tiled'] else 'no'} | {r['startup_s']} | "
            f"{r['encode_s_per_mpx']} | {r['decode_s_per_mpx']} | {r['peak_rss_mb']} |" for r in d["codec"]]
    net = d["per_network"]
    runtimes = list(net["installed_mb"])
    out += [f"\n**The candidates per network**, the same graphs at {net['size']}: best of 3 runs, and in brackets "
            "the time to load (ONNX Runtime) or compile (OpenVINO) the graph, in seconds; installed size: "
            + ", ".join(f"{r} {mb} MB" for r, mb in net["installed_mb"].items()) + ":\n",
            "| graph | threads | " + " | ".join(runtimes) + " |", "|---|---|" + "---|" * len(runtimes)]
    for name, by in net["graphs"].items():
        threads = next(iter(by.values()))["threads"]
        out.append(f"| {name} | {threads} | " + " | ".join(f"{by[r]['best_s']} ({by[r]['load_s']})" if r in by else "-"
                                                           for r in runtimes) + " |")
    out += ["\n**The reference line**: classical decoders on the same photo at about the same bytes:\n",
            "| codec | size | bytes | decode, s | decode, s/Mpx |", "|---|---|---|---|---|"]
    out += [f"| {r['codec']} | {r['size']} | {r['bytes']} | {r['decode_s']} | {r['decode_s_per_mpx']} |"
            for r in d["reference_decoders"]]
    out.append("\n" + ("No GPU figures: no GPU was available to this benchmark." if not d.get("gpu") else ""))
    return "\n".join(out) + "\n"


def columns_markdown() -> str:
    sys.path.insert(0, str(ROOT))
    from pipeline.tables.schema import ALL_TABLES, describe

    out = []
    for table in ALL_TABLES:
        doc, columns = describe(table)
        out.append(f"### `{table}`\n\n{doc}\n\n| column | type | what it holds |\n|---|---|---|")
        out += [f"| `{name}` | {kind} | {html.escape(text)} |" for name, kind, text in columns]
        out.append("")
    return "\n".join(out)


def on_files(files: Any, config: Any) -> Any:
    """The figures under ``benchmarks/results/`` join the site, so pages show them where they lie."""
    from mkdocs.structure.files import File

    for path in sorted(RESULTS.rglob("*")):
        if path.suffix in (".png", ".jpg"):
            files.append(File(str(path.relative_to(ROOT)), src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if "<!-- columns -->" in markdown:
        markdown = markdown.replace("<!-- columns -->", columns_markdown())
    if "<!-- cpu_runtime -->" in markdown:
        markdown = markdown.replace("<!-- cpu_runtime -->", cpu_runtime_markdown())
    if "<!-- results -->" in markdown:
        markdown = markdown.replace("<!-- results -->", results_markdown())
    return markdown
