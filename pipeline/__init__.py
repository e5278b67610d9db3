"""Ray Data stages, I/O and schemas of the OSCAR transcoder.

    sources  -> read_binary_files -> DecodeImages -> EncodeStage (actors) -> ReconstructStage (actors)
             -> write_tables (Parquet parts + a commit marker per batch) -> summary
"""
