"""Run once on the code before settings were declared: freezes fingerprints and key settings."""

import json
import sys
from pathlib import Path

from stepedit_core.engines import make_engine
from stepedit_core.lifecycle.incremental import key_settings
from stepedit_core.lifecycle.job import JobSpec

BASE = dict(manifest_uri="/data/cat/manifest.parquet", out="/data/runs", run_id="r1")
JOBS = {
    "default": {},
    "signal_many": dict(
        edits=["denoise", "speed=faster"],
        iterations=3,
        engine="signal",
        executor="local",
        shard_size=50,
        seed=7,
        vad_max_pause=0.5,
        asr_models="/m/whisper",
        qc_max_wer=0.2,
        word_timings="asr",
        qc="acx",
        qc_heavy=True,
        select="best",
        deliver_format="mp3",
        mp3_bitrate=256,
        report="all",
        incremental=True,
        allow_roots=["/data"],
        max_input_mb=100,
        read_timeout_s=30.0,
        gpus={"signal_edit": 0.5},
        batch_sizes={"signal_edit": 4},
        until_judged=True,
        judge={"kind": "objective"},
    ),
    "model_many": dict(
        edits=["emotion=happy"],
        iterations=2,
        engine="step-audio-editx",
        prompt_mode="fixed",
        models_dir="/m/stepaudio",
        stepaudio_src="/src/step",
        llm_backend="vllm",
        segment_seconds=20.0,
        word_timings="auto",
        deliver_format="wav",
        mp3_bitrate=320,
        ray_address="ray://head:10001",
        overwrite=True,
    ),
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
print(
    json.dumps({k: (v["key_settings"], sorted(v["fingerprint"])) for k, v in out.items()}, indent=1)
)
