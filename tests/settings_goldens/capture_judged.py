"""Run once on the code before the judge's own options were declared: freezes the fingerprint and
key settings of judged jobs (the judge's every option set, and the defaults)."""

import json
import sys
from pathlib import Path

from stepedit_core.engines import make_engine
from stepedit_core.lifecycle.incremental import key_settings
from stepedit_core.lifecycle.job import JobSpec

BASE = dict(manifest_uri="/data/cat/manifest.parquet", out="/data/runs", run_id="r1")
JOBS = {
    "judged_openai": dict(
        edits=["emotion=happy"],
        iterations=3,
        until_judged=True,
        judge={
            "kind": "openai",
            "endpoint": "http://judge:8000/v1",
            "model": "qwen2-audio",
            "key_env": "JUDGE_KEY",
            "prompts": {"emotion": "Is this {label}?"},
            "concurrency": 16,
        },
    ),
    "judged_gemini_defaults": dict(judge={"kind": "gemini", "model": "gemini-2.5-pro"}),
}
out = {}
for name, fields in JOBS.items():
    job = JobSpec(**BASE, **fields)
    engine = make_engine(job.engine, job.engine_options())
    out[name] = {
        "job": {**BASE, **fields},
        "fingerprint": job.fingerprint(),
        "key_settings": key_settings(job, engine),
        "engine_version": engine.version,
    }
Path(sys.argv[1]).write_text(json.dumps(out, indent=2, sort_keys=True))
