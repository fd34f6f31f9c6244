"""Measuring edits against a benchmark: importing Step-Audio-Edit-Benchmark as a manifest."""
