"""A run from start to end: the job's settings, checks that refuse a run, planning and
shards, rounds, exactly-once commits and resume, integrity on resume, the incremental index,
the lease, stops and the reaper, folder ownership, progress, each stage's interpreter, and
run.json.

May import: every layer below it (foundation, catalog, quality, signal, engines, executors,
words, judges, audit, report); never dataset, which builds on runs. Below it only the
executors use it (stop requests, a stage's interpreter).
"""
