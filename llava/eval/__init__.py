"""Evaluation: answer generators with upstream names, scorers and converters, summaries, benchmarks."""
