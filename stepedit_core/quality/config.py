"""The quality settings of a run, declared beside the quality checks that use them: what every
round is checked against, which round is delivered and in what format. `QcPlan`
(delivery.py) is built from these declarations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from stepedit_core.foundation.settings import Setting, SettingsGroup


class QualityConfig(SettingsGroup):
    """Quality checks and delivery"""

    qc: Annotated[
        Literal["acx", "r128", "netflix", "none"],
        Setting(
            "delivery profile every round is checked against (pass/fail with reasons); "
            "cheap QC metrics are measured in any case",
            changes_output=True,
            flag="--qc",
            fingerprint="always",
        ),
    ] = "none"
    qc_heavy: Annotated[
        bool,
        Setting(
            "also DNSMOS and speaker similarity to the source (pip install 'stepedit[qc-heavy]')",
            changes_output=True,
            flag="--qc-heavy",
            fingerprint="always",
        ),
    ] = False
    qc_max_wer: Annotated[
        float | None,
        Field(ge=0.0, le=10.0),
        Setting(
            "fail a round whose word error rate against its text is over RATE (e.g. 0.2; "
            "needs --asr-models); --select best never delivers such a round",
            changes_output=True,
            flag="--qc-max-wer",
            metavar="RATE",
            joins_with="asr_models",
        ),
    ] = None
    select: Annotated[
        Literal["last", "best"],
        Setting(
            "round to deliver: the last, or the best round that passes --qc (highest speaker "
            "similarity, else smallest timbre drift, else closest to the profile's targets)",
            changes_output=True,
            flag="--select",
            fingerprint="always",
        ),
    ] = "last"
    # MP3 is constant bitrate, `mp3_bitrate` kbps (encoding.py)
    deliver_format: Annotated[
        Literal["flac", "wav", "mp3"],
        Setting(
            "format of the delivered files: FLAC (24-bit, the round's file), WAV (24-bit) or "
            "MP3 (constant bitrate, 44.1 kHz; with --qc acx mono, and QC checks the encoded "
            "file)",
            changes_output=True,
            flag="--deliver-format",
            fingerprint="always",
            key="when_set",
            key_name="deliver",
        ),
    ] = "flac"
    mp3_bitrate: Annotated[
        Literal[128, 160, 192, 224, 256, 320],
        Setting(
            "MP3 bitrate, kbps CBR (ACX: 192 or more)",
            changes_output=True,
            flag="--mp3-bitrate",
            fingerprint="always",
            key="when_set",
            joins_with="deliver_format",  # only an MP3 delivery uses it
            key_name="deliver",
        ),
    ] = 192
    # the review page RUN/report/: players for every clip, for index.html's clips, or no page
    report: Annotated[
        Literal["all", "index", "none"],
        Setting(
            "review page RUN/report/index.html: players and spectrograms for the clips on "
            "index.html (first page and every failure), for every clip, or no page",
            changes_output=False,
            flag="--report",
        ),
    ] = "index"
