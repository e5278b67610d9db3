"""Ray Data stages, I/O and schemas of the OSCAR transcoder.

    sources  -> read_binary_files -> decode_images -> EncodeVerifyStage (actors; or EncodeStage -> ReconstructStage)
             -> write_tables (Parquet parts + a commit marker per batch) -> summary
"""
