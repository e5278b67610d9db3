"""mkdocs hook: the pages that are made from the code and the measurements, so they cannot drift.

* ``<!-- columns -->`` (tables.md): every column of every output table, from
  :mod:`pipeline.tables.schema` (the one place the tables are declared).
* ``<!-- results -->`` (results.md): every JSON file under ``benchmarks/results/``, each with the
  command that made it (its own ``command`` field, or :data:`COMMANDS`).
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
    if "<!-- results -->" in markdown:
        markdown = markdown.replace("<!-- results -->", results_markdown())
    return markdown
