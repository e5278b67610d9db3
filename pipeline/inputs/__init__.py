"""What to read: an input URI -> work units, a unit -> raw rows, and model folders on object storage."""
