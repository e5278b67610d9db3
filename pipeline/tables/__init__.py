"""What is written: every table's schema, the row builders' shared pieces, the writer, the Delta
commits in windows, and bounded reads back on the driver."""
