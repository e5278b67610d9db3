"""Planning work units and reading them, without Ray: WebDataset tars, Parquet shards, file
groups, manifests; and the driver's commit windows (which receipts and units may commit)."""

from __future__ import annotations

import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.inputs.readers import read_units
from pipeline.inputs.units import ImageColumns, WorkUnit, expand_braces, plan_units
from pipeline.storage import StorageOptions
from pipeline.tables.windows import CommitWindows
from tests.shard_fixtures import binary_parquet, cut_inside_member, hf_parquet, webdataset_tar


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((40, 56, 3)) * 255).astype(np.uint8) for _ in range(n)]


def read_all(unit: WorkUnit) -> list[dict]:
    import pyarrow as pa

    rows = []
    for batch in read_units(pa.Table.from_pylist([unit.to_item()]), StorageOptions()):
        rows += batch.to_pylist()
    return rows


def test_tar_members_by_key_with_broken_member_and_sidecar_only_sample(tmp_path):
    shard = tmp_path / "00000.tar"
    shard.write_bytes(webdataset_tar(photos(3), broken_member=True, sidecar_only=True))
    (unit,) = plan_units(str(tmp_path))
    assert unit.kind == "tar" and unit.unit_id == str(shard)
    rows = read_all(unit)
    assert [r["source_uri"] for r in rows] == [f"{shard}#00000{i}.jpg" for i in range(4)] + [f"{shard}#000004"]
    assert [bool(r["error"]) for r in rows] == [False] * 4 + [True]  # the broken .jpg fails later, at decode
    assert "no image" in rows[-1]["error"]["message"]
    assert [r["unit_size"] for r in rows] == [0, 0, 0, 0, 5]  # only the last row carries the unit's size


def test_truncated_tar_keeps_readable_members_and_says_where_it_broke(tmp_path):
    (tmp_path / "cut.tar").write_bytes(cut_inside_member(webdataset_tar(photos(4)), member=4))
    rows = read_all(WorkUnit(str(tmp_path / "cut.tar"), "tar", str(tmp_path / "cut.tar")))
    good = [r for r in rows if not r["error"]]
    assert len(good) == 2 and all(r["bytes"] for r in good)  # samples 0 and 1 were whole
    broke = rows[-1]
    assert broke["source_uri"] == str(tmp_path / "cut.tar")
    assert "broke off inside member 000002.jpg, after 4 whole members" in broke["error"]["message"]
    assert broke["unit_size"] == len(rows)


def test_empty_tar_and_missing_shard_still_complete_their_unit(tmp_path):
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    for name in ("empty.tar", "missing.tar"):
        (row,) = read_all(WorkUnit(str(tmp_path / name), "tar", str(tmp_path / name)))
        assert row["error"] and row["unit_size"] == 1


def test_parquet_hf_struct_and_binary_column_detected(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "part-0.parquet").write_bytes(hf_parquet(photos(3), null_at=1))
    (unit,) = plan_units(str(tmp_path / "hf"))
    assert (unit.kind, unit.columns) == ("parquet", ImageColumns("image", "key"))
    rows = read_all(unit)
    assert [r["source_uri"].rsplit("#", 1)[1] for r in rows] == ["img-0", "img-1", "img-2"]
    assert [bool(r["error"]) for r in rows] == [False, True, False] and rows[-1]["unit_size"] == 3

    (tmp_path / "one.parquet").write_bytes(binary_parquet(photos(2)))
    (unit,) = plan_units(str(tmp_path / "one.parquet"))
    assert unit.columns == ImageColumns("jpg", None)
    assert [r["source_uri"].rsplit("#", 1)[1] for r in read_all(unit)] == ["0", "1"]  # row numbers as keys


def test_parquet_planning_errors_list_the_columns(tmp_path):
    (tmp_path / "two.parquet").write_bytes(binary_parquet(photos(1), extra_binary=True))
    with pytest.raises(ValueError, match="several image-like columns"):
        plan_units(str(tmp_path / "two.parquet"))
    assert plan_units(str(tmp_path / "two.parquet"), columns=ImageColumns("png"))[0].columns.image == "png"
    pq.write_table(pa.table({"caption": ["x"], "width": [3]}), tmp_path / "none.parquet")
    with pytest.raises(ValueError, match=r"no image column .* columns: caption \(string\), width \(int64\)"):
        plan_units(str(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match="--key-column 'nope' not found"):
        plan_units(str(tmp_path / "two.parquet"), columns=ImageColumns("jpg", "nope"))


def test_parquet_with_uri_column_stays_a_manifest(tmp_path):
    pq.write_table(pa.table({"uri": [str(tmp_path / f"{i}.jpg") for i in range(5)]}), tmp_path / "m.parquet")
    units = plan_units(str(tmp_path / "m.parquet"))
    assert all(u.kind == "files" for u in units) and sum(len(u.members) for u in units) == 5


def test_file_groups_are_stable_and_local_to_an_insertion(tmp_path):
    uris = [f"s3://bucket/photos/{i:06d}.jpg" for i in range(2000)]
    from pipeline.inputs.units import _file_groups

    before = _file_groups(uris, 64)
    assert [u.unit_id for u in before] == [u.unit_id for u in _file_groups(list(uris), 64)]
    assert all(len(u.members) <= 128 for u in before) and sum(len(u.members) for u in before) == 2000
    after = _file_groups(sorted([*uris, "s3://bucket/photos/000999a.jpg"]), 64)
    changed = {u.unit_id for u in after} - {u.unit_id for u in before}
    assert len(changed) == 1  # only the group the new file landed in
    # The members are held once, in Arrow; read items carry Python strings, cut in order.
    items = [item for u in before for item in u.to_items(16)]
    assert [m for item in items for m in item["members"]] == uris
    assert all(isinstance(m, str) for m in items[0]["members"]) and all(len(i["members"]) <= 16 for i in items)


def test_tar_lists_and_brace_ranges():
    assert expand_braces("s3://b/{000..002}.tar") == ["s3://b/000.tar", "s3://b/001.tar", "s3://b/002.tar"]
    units = plan_units("s3://b/a.tar,s3://b/{08..09}.tar")
    assert [u.uri for u in units] == ["s3://b/a.tar", "s3://b/08.tar", "s3://b/09.tar"]
    with pytest.raises(ValueError, match="must all be .tar"):
        plan_units("s3://b/a.tar,s3://b/b.jpg")


def _receipt(seen: dict[str, int], sizes: dict[str, int], name: str) -> dict:
    return {"files": [{"table": "bitstreams", "path": name}], "seen": seen, "sizes": sizes, "ok": sum(seen.values()),
            "failed": 0, "units": {u: {"ok": n, "failed": 0, "bytes": 10 * n, "bpp": {0: (0.1 * n, n)}, "quality": {}}
                                   for u, n in seen.items()}}


def test_the_tally_counts_a_unit_once_committed_and_a_redone_unit_once():
    from pipeline.tables.windows import Tally

    tally = Tally()
    tally.add(_receipt({"a": 2, "b": 1}, {}, "f1"))
    tally.settle({"a"})                                  # a committed; b caught half-way by a crash
    tally.forget({"b"})                                  # b's rows deleted, to be redone
    tally.add(_receipt({"b": 3}, {"b": 3}, "f2"))        # b redone whole
    tally.settle({"b"})
    assert (tally.ok, tally.bytes, tally.mean_bpp()) == (5, 50, {0: 0.1})


def test_commit_windows_commit_every_file_and_carry_the_partial_units():
    w = CommitWindows(every_units=1)
    w.add(_receipt({"a": 2}, {"a": 2}, "f1"))            # a complete
    w.add(_receipt({"b": 1, "c": 1}, {"b": 1}, "f2"))    # b complete; c has rows, size unknown yet
    files, units, touched, partial = w.take()
    assert sorted(f["path"] for f in files["bitstreams"]) == ["f1", "f2"]  # nothing held back
    assert units == {"a": 2, "b": 1} and touched == {"a", "b", "c"} and partial == {"c"}
    w.add(_receipt({"d": 1}, {}, "f3"))
    assert w.take()[3] == {"c", "d"}  # cumulative: every unit with committed rows, not complete yet
    w.add(_receipt({"c": 2}, {"c": 3}, "f4"))
    files, units, touched, partial = w.take()
    assert units == {"c": 3} and partial == {"d"}
    assert w.take()[:2] == ({}, {})


def test_heal_deletes_the_rows_of_partial_and_torn_units(tmp_path):
    import pyarrow as pa

    from pipeline.tables.delta import DeltaOutput, read_delta
    from pipeline.tables.schema import ERRORS
    from pipeline.tables.writer import write_table_file

    def file_of(*units: str) -> dict:
        rows = [{"source_uri": f"{u}#{i}", "image_id": None, "stage": "read", "error_type": "E", "message": "m",
                 "unit_id": u} for u in units for i in range(2)]
        return write_table_file(pa.Table.from_pylist(rows, schema=ERRORS), "errors", str(tmp_path), None)

    out = DeltaOutput(str(tmp_path))
    out.create_tables()
    out.done_and_models()
    out.commit_window({"errors": [file_of("a", "b")]}, [{"unit_id": "a", "kind": "tar", "uri": "a", "images": 2}],
                      "m", {"a", "b"}, {"b"})                           # window 0: a done, b partial
    out.commit_window({"errors": [file_of("b", "c")]}, [], "m", {"b", "c"}, {"b", "c"})  # window 1: nothing done
    # window 2 torn: its results committed (d, and the rest of c), its work_units commit never made
    torn = file_of("d")
    from deltalake import CommitProperties
    from deltalake.transaction import AddAction

    out.table("errors").create_write_transaction(
        [AddAction(path=torn["path"], size=torn["size"], partition_values={}, modification_time=torn["mtime_ms"],
                   data_change=True, stats=torn["stats"])], mode="append", schema=ERRORS,
        commit_properties=CommitProperties(custom_metadata={"oscar.window": 2, "oscar.units": ["d"], "oscar.partial": ["b", "c"]}))
    assert sorted(set(read_delta(str(tmp_path), "errors").column("unit_id").to_pylist())) == ["a", "b", "c", "d"]
    again = DeltaOutput(str(tmp_path))
    assert again.heal() == 8  # b (4 rows, two windows), c (2) and the torn window's d (2); a is done and stays
    assert set(read_delta(str(tmp_path), "errors").column("unit_id").to_pylist()) == {"a"}
    assert again.heal() == 0
