"""Ray Data stages, I/O and schemas of the OSCAR transcoder (see docs/architecture.md).

    sources (what to read) -> stages (per-batch functions, actor pools) -> sinks (Parquet parts
    + commit markers) -> report;  rows: what travels between them and each table's rows;
    runner: the resumable loop every job (archive, redecode, audit) runs on.
"""
