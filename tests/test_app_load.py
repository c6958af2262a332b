"""The app under load in a real headless browser: four sessions each upload two small PNGs
that decode to 8000x8000 pixels (192 MB each at full size), and the server's memory stays
bounded.

Drives the real server (``streamlit run``, loopback only) with Debian's chromium, as
tests/test_browser.py does. Writes what it measured (the server's peak resident memory,
sampled from /proc and its VmHWM, before, during and after the uploads) to
``load.json`` under the test's tmp folder and prints it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps import app_logic as logic

import test_browser

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SIDE = 8000  # px: 64 megapixels, the loader's limit
SESSIONS = 4
ROUNDS = 2
LIMIT_MB = 1536  # 1.5 GB, for the server's resident memory and its peak
BUDGET_S = 180  # the whole test, server start included

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} missing: `apt-get install -y chromium`"),
]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak since start) of one process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class Sampler(threading.Thread):
    """Polls a process's VmRSS every 50 ms and keeps the largest value seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, memory_mb(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(0.05)


def big_pngs(folder: Path, count: int) -> list[Path]:
    """``count`` different SIDE x SIDE RGB PNGs, mostly one colour (each well under 1 MB)."""
    pixels = np.full((SIDE, SIDE, 3), (235, 240, 245), dtype=np.uint8)
    paths = []
    for i in range(count):
        block = pixels[1000 + 300 * i : 3000 + 300 * i, 2000:5000]
        block[:] = (200 - 20 * i, 40 + 20 * i, 60)
        path = folder / f"huge_{i}.png"
        Image.fromarray(pixels).save(path, compress_level=9)
        block[:] = (235, 240, 245)
        paths.append(path)
    return paths


# The real app server on loopback: the browser test's fixture.
server = test_browser.server


def test_four_sessions_uploading_huge_pngs_keep_the_server_small(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM_ARGS, VIEWPORT

    started = time.monotonic()
    url, process, label = server
    pngs = big_pngs(tmp_path, SESSIONS * ROUNDS)
    assert max(p.stat().st_size for p in pngs) < logic.MAX_UPLOAD_BYTES
    sampler = Sampler(process.pid)
    rounds, rss_after_round = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(SESSIONS)]
            pages = [context.new_page() for context in contexts]
            for page in pages:
                page.goto(url)
            for page in pages:  # the first session loads both models
                page.get_by_text("VQA model:", exact=False).first.wait_for(timeout=120_000)
            uploads = [page.locator('[data-testid="stFileUploaderDropzoneInput"]') for page in pages]
            for upload in uploads:
                upload.wait_for(state="attached", timeout=30_000)
            baseline = memory_mb(process.pid)["VmRSS"]
            sampler.start()
            for r in range(ROUNDS):
                files = pngs[r * SESSIONS : (r + 1) * SESSIONS]
                begun = time.perf_counter()
                for upload, path in zip(uploads, files):  # all four at once: the server sees them together
                    upload.set_input_files(str(path))
                for page, path in zip(pages, files):
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                    page.locator(f".st-key-caption_{digest} h3").wait_for(state="visible", timeout=120_000)
                    assert not page.locator('[data-testid="stException"]').count()
                    assert not page.locator('[data-testid="stAlertContentError"]').count()
                rounds.append(round(time.perf_counter() - begun, 2))
                rss_after_round.append(round(memory_mb(process.pid)["VmRSS"], 1))
            busy = memory_mb(process.pid)
            for context in contexts:
                context.close()
        finally:
            browser.close()
    time.sleep(3)
    sampler.stopped.set()
    sampler.join(timeout=5)
    after = memory_mb(process.pid)
    record = {
        "sessions": SESSIONS,
        "uploads_per_session": ROUNDS,
        "image": f"{SIDE}x{SIDE} RGB PNG, {min(p.stat().st_size for p in pngs) // 1024}-"
        f"{max(p.stat().st_size for p in pngs) // 1024} KB",
        "server_rss_mb_models_loaded": round(baseline, 1),
        "server_rss_mb_peak_sampled": round(max(sampler.peak, busy["VmRSS"], after["VmRSS"]), 1),
        "server_vmhwm_mb": round(after["VmHWM"], 1),
        "server_rss_mb_after_last_caption": round(busy["VmRSS"], 1),
        "server_rss_mb_sessions_closed": round(after["VmRSS"], 1),
        "server_rss_mb_after_each_round": rss_after_round,
        # All the growth over the models, shared caches and allocator slack included, per session.
        "server_rss_mb_growth_per_session": round((busy["VmRSS"] - baseline) / SESSIONS, 1),
        "seconds_per_round": rounds,
        "seconds_total": round(time.monotonic() - started, 1),
        "models": label,
        "cpus": os.cpu_count(),
    }
    (tmp_path / "load.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{tmp_path / 'load.json'}:\n{json.dumps(record, indent=2)}")
    assert record["server_vmhwm_mb"] < LIMIT_MB, record
    assert record["server_rss_mb_peak_sampled"] < LIMIT_MB, record
    assert record["seconds_total"] < BUDGET_S, record
