"""Benchmark runners behind ``longmm bench ...`` (its options: ``longmm.cli.bench``): each writes
JSON, plots and docs tables."""
