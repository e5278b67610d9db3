"""The audit's outputs, built from its committed tables: BD-rates, streamed statistics, figures,
crops, summary.json and report.html."""
