"""Entry points: ``python -m jobs.archive | redecode | audit | train``."""
