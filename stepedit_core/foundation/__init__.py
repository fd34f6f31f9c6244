"""The foundation every layer stands on: the edit vocabulary, failure codes, audio I/O
and hashing, bounded reads of source files, audio held by reference in a run's store, the run
layout and its atomic writes, retries, crash points, the stage contract (`WorkItem`, with
its `ClipSpec` and the engines' trace type) and the settings' declaration marker.

May import: nothing of stepedit_core outside this package (and `stepedit_core.signal`).
"""
