"""Ray Data stages, I/O and schemas of the OSCAR transcoder (see docs/architecture.md).

    sources (work units) -> shards (readers) -> stages (per-batch functions, actor pools)
    -> sinks (data files + receipts) -> delta (windows committed by the driver) -> report;
    rows: what travels between them and each table's rows; runner: the resumable loop every
    job (archive, redecode, audit) runs on.
"""
