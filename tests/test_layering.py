"""Dependencies point down: the library never pulls in Prefect, and only executors use Ray."""

import subprocess
import sys

CHECK = """
import sys
import stepedit_core.plan, stepedit_core.shard, stepedit_core.executors.local
import stepedit_core.engines.signal, stepedit_core.engines.stepaudio.engine
upper = ("prefect", "ray", "stepedit_flows", "stepedit_tasks")
loaded = sorted(m for m in upper if m in sys.modules)
print(",".join(loaded))
"""


def test_library_imports_neither_prefect_nor_ray():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
