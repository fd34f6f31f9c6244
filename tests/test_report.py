"""The review page (RUN/report/) built from a real run, checked in a real headless Chromium.

Chromium and chromedriver come from Debian (`apt-get install -y chromium chromium-driver`, as
.ci/run does); the browser test skips only where they are not installed. The screenshot is
kept in tests/artifacts/report.png."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stepedit_core.foundation.audio import Audio, sha256_bytes
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.report import build_report
from stepedit_core.report.png import png_bytes
from stepedit_core.report.spectrogram import mel, spectrogram_db
from stepedit_flows.cli import main

from conftest import run_inprocess, write_clip, write_manifest

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def run_with_qc(tmp_path_factory) -> Path:
    """4 clips + 1 missing file, 2 rounds, mastered and checked against ACX; line-2 is
    levelled far below ACX's RMS window, so it fails delivery."""
    base = tmp_path_factory.mktemp("report")
    clips = base / "clips"
    clips.mkdir()
    rows = [
        {
            "clip_id": f"line-{i}",
            "audio_uri": write_clip(clips / f"{i}.wav", 0.7 + 0.2 * i, f0=140 + 30 * i),
            "text": f"spoken line number {i}",
            "edit": "loudness=-40" if i == 2 else None,
        }
        for i in range(4)
    ]
    rows.append({"clip_id": "gone", "audio_uri": str(clips / "gone.wav")})
    job = JobSpec(
        manifest_uri=write_manifest(base / "catalog.parquet", rows),
        out=str(base / "runs"),
        run_id="r1",
        edits=["loudness=acx"],
        iterations=2,
        executor="local",
        shard_size=10,
        qc="acx",
    )
    run_inprocess(job)
    return base / "runs" / "r1"


def records_of(run: Path) -> list[dict]:
    """Round-1 records, in row order (the first player of a clip after its source)."""
    records = pq.read_table(run / "iterations", columns=["clip_id", "iteration", "duration_s"])
    return sorted(
        (r for r in records.to_pylist() if r["iteration"] == 1), key=lambda r: r["clip_id"]
    )


def test_png_writer_produces_a_valid_png():
    rgb = np.zeros((3, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    data = png_bytes(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (2, 3)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert raw[:4] == b"\x00\xff\x00\x00"  # filter byte, then the red pixel


@pytest.mark.parametrize("hz", [200.0, 2000.0, 5000.0])
def test_spectrogram_puts_a_tone_in_its_mel_row(hz):
    rate = 16000
    t = np.arange(rate) / rate
    tone = Audio((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[:, None], rate)
    image = spectrogram_db(tone, columns=50, rows=80)
    assert image.shape == (80, 50)
    loudest_row = int(np.argmax(image.mean(axis=1)))
    # rows evenly spaced in mel up to 8 kHz, low frequencies at the bottom
    expected = 80 - 1 - int(mel(hz) / mel(rate / 2) * 80)
    assert abs(loudest_row - expected) <= 1


def test_report_files_and_pages(run_with_qc, capsys):
    assert main(["report", str(run_with_qc), "--page-size", "2"]) == 0
    assert "report/index.html" in capsys.readouterr().out
    report = run_with_qc / "report"
    summary = json.loads((report / "report.json").read_text())
    assert summary["pages"] == ["index.html", "page-0002.html", "page-0003.html"]
    index = (report / "index.html").read_text()
    # first page (2 clips) plus every failing clip: QC fails (line-2 at least) and gone
    manifest = pq.read_table(run_with_qc / "manifest.parquet").to_pylist()
    failing = [r for r in manifest[2:] if r["status"] == "failed" or r["qc_status"] == "fail"]
    assert {"line-2", "gone"} <= {r["clip_id"] for r in failing}
    assert index.count("<tr data-status") == 2 + len(failing)
    assert 'data-qc="fail"' in index and "rms_dbfs" in index
    assert "missing_file" in index and 'href="page-0002.html"' in index
    assert "http://" not in index and "https://" not in index  # nothing loads from the network
    # a round's audio is the record's exact bytes
    records = pq.read_table(run_with_qc / "iterations").to_pylist()
    rec = next(r for r in records if r["clip_id"] == "line-1" and r["iteration"] == 2)
    media = report / "media" / "00000001-line-1"
    assert sha256_bytes((media / "round-2.flac").read_bytes()) == rec["output_sha256"]
    assert (media / "source.png").read_bytes()[:4] == b"\x89PNG"
    assert (report / "page-0003.html").read_text().count("<tr data-status") == 1


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium/chromedriver not installed (.ci/run installs them with apt-get)",
)
def test_report_in_headless_chromium(run_with_qc, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    build_report(str(run_with_qc.parent), run_with_qc.name, page_size=3)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1400,1600",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get((run_with_qc / "report" / "index.html").as_uri())
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
        )
        rows = driver.find_elements(By.CSS_SELECTOR, "table.clips tbody tr")
        manifest = pq.read_table(run_with_qc / "manifest.parquet").to_pylist()
        later_failing = [
            r for r in manifest[3:] if r["status"] == "failed" or r["qc_status"] == "fail"
        ]
        assert len(rows) == 3 + len(later_failing)  # page 1 (line-0..2) plus later failures
        # players: source + 2 rounds for each clip that ran; each one really decodes
        players = driver.find_elements(By.TAG_NAME, "audio")
        ran = [r for r in manifest[:3] + later_failing if r["status"] == "ok"]
        assert len(players) == 3 * len(ran)
        duration = driver.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            "var a = document.querySelectorAll('audio')[1];"
            "a.addEventListener('loadedmetadata', function () { done(a.duration); });"
            "a.addEventListener('error', function () { done(-1); });"
            "a.preload = 'auto'; a.load();"
        )
        source = next(r for r in records_of(run_with_qc) if r["clip_id"] == "line-0")
        assert duration == pytest.approx(source["duration_s"], abs=0.02)  # round 1 of line-0
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        metrics = {c.get_attribute("data-metric") for c in charts}
        assert {"rms_dbfs", "peak_dbfs", "duration_s", "noise_floor_db", "loudness_lufs"} <= metrics
        assert all(c.find_elements(By.TAG_NAME, "polyline") for c in charts)
        assert "QC pass rate by round (acx)" in driver.page_source
        image_ok = driver.execute_script(
            "var img = document.querySelector('figure img');"
            "return img.complete && img.naturalWidth;"
        )
        assert image_ok == 320

        def visible() -> list[str]:
            return [
                r.find_element(By.TAG_NAME, "b").text
                for r in driver.find_elements(By.CSS_SELECTOR, "table.clips tbody tr")
                if r.is_displayed()
            ]

        box = driver.find_element(By.ID, "filter-text")
        box.send_keys("line-1")
        assert visible() == ["line-1"]
        box.clear()
        box.send_keys("x")  # clear() fires no input event: type and delete
        box.send_keys("\b")
        qc_fail = [r["clip_id"] for r in manifest if r["qc_status"] == "fail"]
        shown = [r["clip_id"] for r in manifest[:3] + later_failing]
        Select(driver.find_element(By.ID, "filter-status")).select_by_value("qc-fail")
        assert visible() == [c for c in shown if c in qc_fail] and "line-2" in visible()
        Select(driver.find_element(By.ID, "filter-status")).select_by_value("failed")
        assert visible() == ["gone"]
        count = driver.find_element(By.ID, "filter-count").text
        assert f"1 of {len(shown)} clips shown" in count
        Select(driver.find_element(By.ID, "filter-status")).select_by_value("all")

        driver.execute_script("window.scrollTo(0, 0);")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        assert shot.stat().st_size > 10_000

        driver.get((run_with_qc / "report" / "page-0002.html").as_uri())
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
        )
        assert visible() == ["line-3", "gone"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def test_audit_of_a_clip_that_never_loaded(run_with_qc, capsys):
    # not in the records index (no round ran): found by scanning the output manifest
    assert main(["audit", str(run_with_qc), "gone"]) == 0
    text = capsys.readouterr().out
    assert "final    [failed]" in text and "missing_file" in text


def test_media_only_for_the_clips_on_the_index_page(run_with_qc, tmp_path):
    run = tmp_path / "runs" / "r1"
    shutil.copytree(run_with_qc, run, ignore=shutil.ignore_patterns("report"))
    build_report(str(run.parent), run.name, page_size=1, media="index")
    media = sorted(p.name for p in (run / "report" / "media").iterdir())
    manifest = pq.read_table(run / "manifest.parquet").to_pylist()
    qc_failing = [
        f"{i:08d}-{r['clip_id']}" for i, r in enumerate(manifest) if i and r["qc_status"] == "fail"
    ]
    assert media == ["00000000-line-0", *qc_failing]  # page 1, and the QC failures
    assert "00000002-line-2" in media
    page = (run / "report" / "page-0002.html").read_text()  # line-1: listed, no players
    assert "line-1" in page and "<audio" not in page and "rms -" in page
    with pytest.raises(ValueError, match="media must be one of"):
        build_report(str(run.parent), run.name, media="some")
