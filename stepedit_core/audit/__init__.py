"""An audit trail you can check: hash-chained round records, a run digest, a sealed run.json.

What covers what (each arrow: "its hash is stored in"):

    round audio (audio_flac) -> record.output_sha256
    every other record field -> record.record_sha256 -> next round's prev_record_sha256
    source file bytes        -> round 1's input_sha256 and prev_record_sha256
    all record_sha256 values + input manifest sha256 -> run.json "audit.run_digest"
    records index, output manifest                   -> run.json "audit"
    run.json bytes                                   -> run.json.sha256 (sha256sum format,
                                                        or an HMAC with $STEPEDIT_AUDIT_KEY)

`verify_run` recomputes every arrow and names each clip and object where one does not hold.
Without a key the hashes prove that nothing changed by accident or by a careless edit; someone
who rewrites a record and every hash after it, run.json's seal included, goes unnoticed unless
the run digest was kept elsewhere (a ticket, the Prefect artifact). With $STEPEDIT_AUDIT_KEY
set when the run is written and verified, the seal is an HMAC and such a rewrite needs the key.

`clip_history` answers from `audit/records.parquet`, an index sorted by clip id (clip -> part
file, row group, row), so one clip costs one index row group and one part row group, not a scan.
"""

from stepedit_core.audit.history import clip_history, delivered_round, format_history
from stepedit_core.audit.records import (
    AUDIT_KEY_ENV,
    SELECTED_FIELD,
    AuditError,
    build_index,
    record_digest,
    run_audit,
    run_digest,
    seal,
    split_run_uri,
    write_sealed_run_json,
)
from stepedit_core.audit.verify import Mismatch, VerifyReport, verify_run

__all__ = [
    "AUDIT_KEY_ENV",
    "SELECTED_FIELD",
    "AuditError",
    "Mismatch",
    "VerifyReport",
    "build_index",
    "clip_history",
    "delivered_round",
    "format_history",
    "record_digest",
    "run_audit",
    "run_digest",
    "seal",
    "split_run_uri",
    "verify_run",
    "write_sealed_run_json",
]
