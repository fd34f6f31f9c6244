"""verify, audit and the review page on a run kept in S3 (moto's S3 server over real HTTP)."""

import io

import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.audit import verify_run
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.cli import main

from conftest import put_clip, run_inprocess


def test_verify_audit_and_report_on_s3(s3, capsys):
    uris = [put_clip(s3, f"catalog/audit/{c}.flac", 0.6) for c in ("a", "b")]
    sink = io.BytesIO()
    pq.write_table(pa.table({"clip_id": ["a", "b"], "audio_uri": uris}), sink)
    s3.pipe("catalog/audit.parquet", sink.getvalue())
    job = JobSpec(
        manifest_uri="s3://catalog/audit.parquet",
        out="s3://runs/audit",
        run_id="a1",
        edits=["loudness=-23"],
        iterations=2,
        executor="local",
    )
    run_inprocess(job)
    run = "s3://runs/audit/a1"

    report = verify_run("s3://runs/audit", "a1")
    assert report.intact, report.text()
    assert report.checked["records"] == 4 and report.checked["delivered files"] == 2
    assert main(["verify", run]) == 0
    assert main(["audit", run, "b", "--json"]) == 0
    assert '"delivered_ok": true' in capsys.readouterr().out

    assert main(["report", run]) == 0
    assert s3.exists("runs/audit/a1/report/index.html")
    assert s3.exists("runs/audit/a1/report/media/00000001-b/round-2.flac")
    assert s3.exists("runs/audit/a1/report/media/00000000-a/source.png")

    delivered = next(p for p in s3.ls("runs/audit/a1/audio") if p.endswith("-a.flac"))
    data = bytearray(s3.cat(delivered))
    data[len(data) // 2] ^= 0x01
    s3.pipe(delivered, bytes(data))
    capsys.readouterr()
    assert main(["verify", run]) == 1
    out = capsys.readouterr().out
    assert "delivered_altered: clip 'a'" in out
