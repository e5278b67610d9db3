"""What is done to each image: decode and validate, OSCAR encode and verify, a quality target, the
classical codecs, and the metrics. Each stage takes the in-flight batch and adds typed columns."""
