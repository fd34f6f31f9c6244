"""The catalog and what is recorded about it: manifest columns and checks, the record
types with their Arrow schemas, allowed roots for audio, text tags, and long clips (split plans
cut in pauses, segment texts, stitching edited segments back together).

May import: foundation, quality, signal, words, audit's record seals. Never lifecycle,
engines, executors, judges, dataset or report.
"""
