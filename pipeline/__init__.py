"""The transcoder's data path on Ray Data: one typed Arrow batch from the read stage to the write stage.

    inputs/   what to read: work units (shards, Parquet files, file groups), the readers, the model cache
    stages/   what is done to each image: decode, OSCAR encode/verify, quality target, classical codecs, metrics
    tables/   what is written: the table schemas, the row pieces, the writer, the Delta commits, reads back
    report/   the audit's outputs: BD-rates, streamed statistics, plots, crops, report.html
    batch     the in-flight batch's columns and types (what flows between stages)
    runner    a job's Plan (units, steps, row builder) and the one resumable runner
    archive, redecode, audit   the jobs, each a plan with its own row builder

See docs/architecture.md for the picture.
"""
