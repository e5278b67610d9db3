"""The output tables as a data engineer meets them: Delta tables that DuckDB and Polars read as
the README shows, with the schema the README documents, nothing uncommitted visible, readable
at an older version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from tests.shard_fixtures import webdataset_tar

ROOT = Path(__file__).resolve().parents[1]


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 64 * 48 * 3).reshape(48, 64, 3)
    return [np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shard_archive(tmp_path_factory, ray_local, tiny_model_dir) -> Path:
    """Three WebDataset shards on local disk (one broken member), archived at two levels, verified."""
    from jobs import archive

    base = tmp_path_factory.mktemp("wds")
    shards = base / "shards"
    shards.mkdir()
    for s in range(3):
        (shards / f"{s:05d}.tar").write_bytes(webdataset_tar(photos(2, seed=s), start=10 * s, broken_member=s == 1))
    out = base / "archive"
    assert archive.main(["--input", str(shards), "--output", str(out), "--rates", "L0,L2", "--model", str(tiny_model_dir),
                         "--commit-units", "1", "--rows-per-file", "8", "--quiet"]) == 0
    return out


def test_shards_archive_into_delta_tables_read_by_duckdb_and_polars(shard_archive):
    import duckdb
    import polars as pl

    out = shard_archive
    # DuckDB over deltalake's Arrow dataset (the README's query), no DuckDB extension download.
    bitstreams = DeltaTable(str(out / "bitstreams")).to_pyarrow_dataset()  # noqa: F841 (DuckDB finds it by name)
    per_level = duckdb.sql("SELECT rate_level, count(*) AS n, avg(bpp) AS bpp FROM bitstreams GROUP BY 1 ORDER BY 1").fetchall()
    assert [(lvl, n) for lvl, n, _ in per_level] == [(0, 6), (2, 6)]
    # Polars (the README's read).
    errors = pl.read_delta(str(out / "errors"))
    assert errors.height == 1 and errors["source_uri"][0].endswith("00001.tar#000012.jpg")
    metrics = pl.read_delta(str(out / "metrics"))
    assert metrics.height == 12 and metrics["psnr"].is_not_null().all()
    units = pl.read_delta(str(out / "work_units"))
    assert sorted(units["uri"].to_list()) == [str(out.parent / "shards" / f"{s:05d}.tar") for s in range(3)]
    assert units["images"].sum() == 7  # 6 photos + 1 broken member


def test_a_new_shard_is_one_new_commit_and_older_versions_still_read(shard_archive, tmp_path, tiny_model_dir):
    from jobs import archive
    from pipeline.tables.delta import read_delta

    out = tmp_path / "archive"
    shutil.copytree(shard_archive, out)
    before = read_delta(str(out), "bitstreams").num_rows
    version = DeltaTable(str(out / "bitstreams")).version()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "00003.tar").write_bytes(webdataset_tar(photos(2, seed=9), start=30))
    shards = sorted(str(p) for p in (shard_archive.parent / "shards").glob("*.tar")) + [str(tmp_path / "new" / "00003.tar")]
    assert archive.main(["--input", ",".join(shards), "--output", str(out), "--rates", "L0,L2",
                         "--model", str(tiny_model_dir), "--quiet"]) == 0
    manifest = json.loads((out / "run_manifest.json").read_text())["counts"]
    assert (manifest["units_done"], manifest["units_skipped_already_done"]) == (1, 3)
    assert read_delta(str(out), "bitstreams").num_rows == before + 4
    assert read_delta(str(out), "bitstreams", version=version).num_rows == before  # time travel


def test_a_finished_rerun_starts_no_ray_and_commits_nothing(shard_archive, tmp_path, tiny_model_dir, monkeypatch):
    import pipeline.runner
    from jobs import archive

    out = tmp_path / "archive"
    shutil.copytree(shard_archive, out)
    logs = {t: sorted(p.name for p in (out / t / "_delta_log").iterdir()) for t in ("bitstreams", "work_units")}

    def no_ray(*args, **kwargs):
        raise AssertionError("a finished rerun must not start Ray or an actor pool")

    monkeypatch.setattr(pipeline.runner, "init_ray", no_ray)
    assert archive.main(["--input", str(shard_archive.parent / "shards"), "--output", str(out), "--rates", "L0,L2",
                         "--model", str(tiny_model_dir), "--quiet"]) == 0
    assert {t: sorted(p.name for p in (out / t / "_delta_log").iterdir()) for t in logs} == logs


def test_redecode_reads_the_archive_index_from_file_statistics(shard_archive, tiny_codec):
    """Model ids and the top level come from the Delta log's per-file statistics, not from reading
    every stream; they agree with the columns themselves."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.redecode import archive_index
    from pipeline.tables.delta import read_delta

    dt = DeltaTable(str(shard_archive / "bitstreams"))
    stats = pa.table(dt.get_add_actions(flatten=True))
    assert stats.column("max.rate_level").null_count == 0 and stats.column("min.model_id").null_count == 0
    ids, top = archive_index(dt)
    columns = read_delta(str(shard_archive), "bitstreams", columns=["model_id", "rate_level"])
    assert ids == set(columns.column("model_id").to_pylist()) == {tiny_codec.model_id}
    assert top == pc.max(columns.column("rate_level")).as_py() == 2


def test_uncommitted_files_are_invisible(shard_archive, tmp_path):
    from pipeline.tables.delta import read_delta

    out = tmp_path / "archive"
    shutil.copytree(shard_archive, out)
    rows = read_delta(str(out), "bitstreams").num_rows
    stray = next((out / "bitstreams").glob("part-*.parquet"))
    shutil.copy(stray, out / "bitstreams" / "part-never-committed.parquet")  # as a killed window leaves it
    assert read_delta(str(out), "bitstreams").num_rows == rows
    assert "part-never-committed.parquet" not in {Path(f).name for f in DeltaTable(str(out / "bitstreams")).file_uris()}


def documented_schemas() -> dict[str, list[tuple[str, str]]]:
    """The declared schemas, which the docs' tables page is generated from, as a Delta table stores
    them: (column, type) per table (Delta has one binary type, read back as Arrow's binary)."""
    import pyarrow as pa
    from deltalake import Schema

    from pipeline.tables.schema import ALL_TABLES

    return {table: [(f.name, str(f.type)) for f in pa.schema(Schema.from_arrow(schema).to_arrow())]
            for table, schema in ALL_TABLES.items()}


def test_the_documented_schemas_match_the_written_tables(shard_archive):
    import pyarrow as pa

    written = {}
    for table in ("bitstreams", "metrics", "errors", "bd_rates", "work_units"):  # bd_rates: empty in an archive
        schema = pa.schema(DeltaTable(str(shard_archive / table)).schema().to_arrow())
        written[table] = [(f.name, str(f.type)) for f in schema]
    assert documented_schemas() == written


def test_maintain_compacts_each_table_and_vacuums_what_it_replaced(shard_archive, tmp_path):
    from jobs import maintain
    from pipeline.tables.delta import read_delta

    out = tmp_path / "archive"
    shutil.copytree(shard_archive, out)
    rows = {t: read_delta(str(out), t).num_rows for t in ("bitstreams", "metrics", "errors", "work_units")}
    assert len(DeltaTable(str(out / "bitstreams")).file_uris()) > 1  # --rows-per-file 8: several small files
    assert maintain.main(["--output", str(out), "--retention-hours", "0"]) == 0
    for table, n in rows.items():
        assert len(DeltaTable(str(out / table)).file_uris()) <= 1 and read_delta(str(out), table).num_rows == n
    assert len(list((out / "bitstreams").glob("*.parquet"))) == 1  # the replaced files were vacuumed


def test_compaction_keeps_the_writers_row_groups(tmp_path):
    """delta-rs compacts into million-row row groups by default; a streamed read (the report's)
    decodes one row group at a time, so maintain keeps them at ROW_GROUP_ROWS."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from pipeline.tables.delta import DeltaOutput
    from pipeline.tables.maintain import maintain
    from pipeline.tables.schema import ERRORS, ROW_GROUP_ROWS

    DeltaOutput(str(tmp_path)).create_tables()
    for part in range(2):
        n = ROW_GROUP_ROWS * 3 // 4
        rows = pa.table({c: [f"{part}-{i}" for i in range(n)] for c in ERRORS.names}).cast(ERRORS)
        write_deltalake(str(tmp_path / "errors"), rows, mode="append")
    maintain(str(tmp_path), retention_hours=0)
    (compacted,) = DeltaTable(str(tmp_path / "errors")).file_uris()
    meta = pq.ParquetFile(compacted).metadata
    assert meta.num_rows == 2 * (ROW_GROUP_ROWS * 3 // 4) and meta.num_row_groups == 2
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= ROW_GROUP_ROWS


def test_an_output_of_an_earlier_schema_gains_the_new_columns(tmp_path):
    """Tables created before metrics had mode/reached and bitstreams the target columns: the next
    run adds them (older rows read them as null) instead of writing files the table cannot show."""
    import pyarrow as pa

    from pipeline.tables.delta import DeltaOutput
    from pipeline.tables.schema import BITSTREAMS, METRICS

    old = {"metrics": pa.schema([f for f in METRICS if f.name not in ("mode", "reached")]),
           "bitstreams": pa.schema([f for f in BITSTREAMS if f.name not in ("target", "target_met", "chosen")])}
    for name, schema in old.items():
        DeltaTable.create(str(tmp_path / name), schema=schema)
    DeltaOutput(str(tmp_path)).create_tables()
    for name, schema in (("metrics", METRICS), ("bitstreams", BITSTREAMS)):
        assert {f.name for f in DeltaTable(str(tmp_path / name)).schema().fields} == set(schema.names)


def test_a_streamed_read_prunes_by_key_and_reads_older_files_with_nulls(tmp_path, monkeypatch):
    """scan_delta (the report's reader): a file written before a column existed reads it as null,
    and a key read opens only the files and row groups whose statistics can hold the keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import WriterProperties, write_deltalake

    from pipeline.tables import scan as table_scan
    from pipeline.tables.delta import DeltaOutput
    from pipeline.tables.scan import scan_delta
    from pipeline.tables.schema import BD_RATES, METRICS

    old = pa.schema([f for f in METRICS if f.name not in ("mode", "reached")])
    DeltaTable.create(str(tmp_path / "metrics"), schema=old)
    props = WriterProperties(max_row_group_size=100)
    rows = {f.name: [None] * 300 for f in old}
    write_deltalake(str(tmp_path / "metrics"), pa.table({**rows, "image_id": [f"a{i:03d}" for i in range(300)],
                                                         "codec": ["jpeg"] * 300}, schema=old), mode="append",
                    writer_properties=props)
    DeltaOutput(str(tmp_path)).create_tables()  # adds mode and reached, at the end
    evolved = pa.schema([*old, METRICS.field("mode"), METRICS.field("reached")])
    write_deltalake(str(tmp_path / "metrics"), pa.table({**rows, "image_id": [f"b{i:03d}" for i in range(300)],
                                                         "codec": ["webp"] * 300, "mode": ["sweep"] * 300,
                                                         "reached": [True] * 300}).cast(evolved), mode="append",
                    writer_properties=props)
    everything = pa.Table.from_batches(list(scan_delta(str(tmp_path), "metrics", columns=["image_id", "mode"])))
    assert everything.num_rows == 600
    assert everything.filter(pa.compute.starts_with(everything["image_id"], "a"))["mode"].null_count == 300
    # A table older than a column (bd_rates written by an earlier report, before matched_gap).
    old_bd = pa.schema([f for f in BD_RATES if f.name not in ("matched_gap", "unit_id")])
    write_deltalake(str(tmp_path / "old" / "bd_rates"), pa.table({f.name: ["x"] if f.type == pa.string() else [1.0]
                                                                  for f in old_bd}, schema=old_bd))
    (gap,) = scan_delta(str(tmp_path / "old"), "bd_rates", columns=["image_id", "matched_gap"])
    assert gap.to_pylist() == [{"image_id": "x", "matched_gap": None}]

    opened = []
    real = table_scan.resolve

    def resolve(uri, storage=None):
        opened.append(uri)
        return real(uri, storage)

    groups = []
    read_group = pq.ParquetFile.read_row_group
    monkeypatch.setattr(table_scan, "resolve", resolve)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, i, **kw: groups.append(i) or read_group(self, i, **kw))
    got = [r for b in scan_delta(str(tmp_path), "metrics", columns=["image_id", "codec"], key=("image_id", ["b150", "zzz"]))
           for r in b.to_pylist()]
    assert got == [{"image_id": "b150", "codec": "webp"}]
    assert len(opened) == 1 and opened[0].endswith(".parquet")  # the a-file's statistics rule it out
    assert groups == [1]  # and of the b-file's three row groups (b000-b099, b100-b199, b200-b299), two


def test_the_json_text_check_finds_json_text(tmp_path):
    import pyarrow as pa
    from conftest import json_text_cells
    from deltalake import write_deltalake

    from pipeline.tables.delta import DeltaOutput
    from pipeline.tables.schema import ERRORS

    out = DeltaOutput(str(tmp_path / "out"))
    out.create_tables()
    row = {"source_uri": "a.png", "image_id": None, "stage": "read", "error_type": "E", "message": '{"kind": "json"}',
           "unit_id": "u"}
    write_deltalake(str(tmp_path / "out" / "errors"), pa.Table.from_pylist([row], schema=ERRORS), mode="append")
    assert json_text_cells(tmp_path / "out") == {"errors.message": ['{"kind": "json"}']}
