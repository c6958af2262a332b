"""The app end to end in a real headless browser: upload a scene, see the caption and its
per-word maps, ask a question. Writes docs/screenshots/caption.png, ask.png and timing.json
(upload-to-caption time and the server's memory).

Needs Debian's chromium at /usr/bin/chromium (``make test`` installs it); never runs
``playwright install``. The server runs the shipped default models; where they are not
installed (or ATTEND_CAPTIONER / ATTEND_VQA name other checkpoints) it says which it used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from apps import app_logic as logic
from data_prep.scenes import SHAPES, make_scene

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
MAX_SCREENSHOT_BYTES = 300_000
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "how many objects are there?"
VIEWPORT = {"width": 1280, "height": 1000}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} missing: `apt-get install -y chromium` (make test does it)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc (MB)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, frontier = {pid}, [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in family]
        family.update(children)
        frontier = children
    total_kb = 0
    for p in family:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def scene_file(folder: Path, index: int) -> Path:
    _, pixels, _, _ = make_scene(logic.GALLERY_SEED, "test", index)
    path = folder / f"scene_{index}.png"
    Image.fromarray(pixels).save(path)
    return path


def models(tmp_path: Path) -> tuple[dict, str]:
    """Environment for the server and a line saying which models it runs."""
    from captioner.checkpoint import SHIPPED as CAPTIONER_SHIPPED
    from vqa.checkpoint import SHIPPED

    shipped = {logic.ENV_CAPTIONER: CAPTIONER_SHIPPED["scenes"], logic.ENV_VQA: SHIPPED["scenes"]}
    env = {var: os.environ[var] for var in shipped if os.environ.get(var)}
    said = {var: f"{path} (from {var})" for var, path in env.items()}
    missing = [var for var, path in shipped.items() if var not in env and not path.is_file()]
    if missing:  # not installed yet: random weights on the real 224 px encoder (timing stays honest)
        from test_app import write_tiny_checkpoints

        tiny = dict(zip(shipped, write_tiny_checkpoints(tmp_path, image_size=224)))
        env.update({var: str(tiny[var]) for var in missing})
        said.update({var: "random-weight stand-in (shipped model not installed)" for var in missing})
    label = "; ".join(
        f"{name}: {said.get(var, 'shipped default')}"
        for name, var in (("captioner", logic.ENV_CAPTIONER), ("VQA", logic.ENV_VQA))
    )
    return env, label


def save_small_png(png: bytes, path: Path) -> int:
    """A screenshot as a PNG under MAX_SCREENSHOT_BYTES: full colour if it fits, else 256
    dithered colours, scaled down only as a last resort."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    candidates = [
        lambda im: im,
        lambda im: im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG),
    ]
    while True:
        for make in candidates:
            buffer = io.BytesIO()
            make(image).save(buffer, format="PNG", optimize=True)
            if buffer.tell() < MAX_SCREENSHOT_BYTES:
                path.write_bytes(buffer.getvalue())
                return buffer.tell()
        image = image.resize((int(image.width * 0.85), int(image.height * 0.85)), Image.Resampling.LANCZOS)


def wait_for_images(page, selector: str, timeout_s: float = 30) -> None:
    """Every image under ``selector`` is decoded (img.complete); each is scrolled into view
    first, so none waits on being seen."""
    images = page.locator(f"{selector} img")
    images.first.wait_for(state="attached", timeout=timeout_s * 1000)
    for i in range(images.count()):
        images.nth(i).scroll_into_view_if_needed(timeout=timeout_s * 1000)
    page.wait_for_function(
        """sel => { const imgs = [...document.querySelectorAll(sel + ' img')];
                    return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=selector,
        timeout=timeout_s * 1000,
    )


def section_screenshot(page, selector: str) -> bytes:
    """PNG of one section. The window is made taller than the section first: Streamlit
    scrolls inside its own container, and rows outside the window would come out blank."""
    section = page.locator(selector)
    height = int(section.bounding_box()["height"]) + 400
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height)})
    wait_for_images(page, selector)
    png = section.screenshot(animations="disabled")
    page.set_viewport_size(VIEWPORT)
    return png


@pytest.fixture
def server(tmp_path):
    env_models, label = models(tmp_path)
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    command = logic.streamlit_command(port=port, address="127.0.0.1")
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env_models}, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, process, label
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def overlay_source(page) -> str:
    wait_for_images(page, ".st-key-word_overlay")
    return page.locator(".st-key-word_overlay img").first.get_attribute("src")


def check_repeated_word_chips(page, chips, words: list[str], image: Path) -> None:
    """Click every occurrence of each repeated word: where the model's maps of two occurrences
    differ (computed here, in-process, with the server's model), so do the images shown."""
    from captioner.inference import Captioner

    checkpoint = os.environ.get(logic.ENV_CAPTIONER) or "scenes"
    result = Captioner.load(checkpoint).caption([str(image)], beam_size=3)[0]
    if result.tokens != words or result.attention is None:
        return  # a stand-in model: nothing to compare against
    repeated = {w for w in words if words.count(w) > 1}
    assert repeated, f"the caption repeats no word: {words}"
    for word in repeated:
        where = [i for i, w in enumerate(words) if w == word]
        shown = {}
        for i in where:
            chips.nth(i).click()
            page.locator(".st-key-word_overlay").get_by_text(f"(word {i + 1})").wait_for(timeout=15_000)
            shown[i] = overlay_source(page)
        for a in where:
            for b in where:
                if a < b and not (result.attention[a] == result.attention[b]).all():
                    assert shown[a] != shown[b], f"occurrences {a} and {b} of {word!r} show the same map"


def test_upload_caption_and_ask_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, process, label = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    scenes = [scene_file(tmp_path, i) for i in (2, 3, 0)]  # the last one is in the screenshots
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(url)
            # Both models are loaded (cache_resource) when the sidebar names them.
            page.get_by_text("VQA model:", exact=False).first.wait_for(timeout=120_000)
            upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
            upload.wait_for(state="attached", timeout=30_000)

            timings = []
            for path in scenes:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                started = time.perf_counter()
                upload.set_input_files(str(path))
                page.locator(f".st-key-caption_{digest} h3").wait_for(state="visible", timeout=30_000)
                timings.append(time.perf_counter() - started)
                caption = page.locator(f".st-key-caption_{digest} h3").inner_text()
                assert caption.strip()
            load = os.getloadavg()[0]
            print(
                f"\nupload -> caption visible: {', '.join(f'{t:.2f}' for t in timings)} s "
                f"(load average {load:.1f}; {label})"
            )

            # Every word has a tile; a click on a word chip shows its map over the image.
            wait_for_images(page, ".st-key-word_grid")
            wait_for_images(page, ".st-key-word_overlay")
            words = caption.split()
            tiles = page.locator(".st-key-word_grid img")
            assert tiles.count() == len(words)
            chips = page.locator(f'[class*="st-key-word_{digest}"] button')
            assert chips.count() == len(words)
            # Streamlit's sticky header would cover the top of element screenshots.
            page.add_style_tag(content='header[data-testid="stHeader"] { display: none !important; }')
            # A shape word (something to point at) is the one in the screenshot.
            pick = next((i for i, word in enumerate(words) if word in SHAPES), min(1, len(words) - 1))
            chips.nth(pick).click()
            page.locator(".st-key-word_overlay").get_by_text(f'"{words[pick]}"').wait_for(timeout=15_000)
            wait_for_images(page, ".st-key-word_overlay")
            # Each occurrence of a repeated word shows its own map (not the last occurrence's).
            check_repeated_word_chips(page, chips, words, scenes[-1])
            chips.nth(pick).click()
            page.locator(".st-key-word_overlay").get_by_text(f'"{words[pick]}"').wait_for(timeout=15_000)
            wait_for_images(page, ".st-key-word_overlay")
            page.mouse.move(0, 0)  # no hover buttons over the pictures
            caption_png = save_small_png(section_screenshot(page, ".st-key-section_caption"), SHOTS / "caption.png")

            # Ask a question (its tab): the answer, its probability bars and each glimpse's map.
            page.get_by_role("tab", name="Ask").click()
            page.locator(".st-key-question input").fill(QUESTION)
            page.locator(".st-key-ask button").click()
            page.locator(".st-key-answer h3").wait_for(state="visible", timeout=30_000)
            answer = page.locator(".st-key-answer h3").inner_text()
            assert answer.strip()
            bars = page.locator('.st-key-answer [data-testid="stProgress"]')
            bars.first.wait_for(state="visible", timeout=15_000)
            wait_for_images(page, ".st-key-section_ask")
            page.mouse.move(0, 0)
            ask_png = save_small_png(section_screenshot(page, ".st-key-section_ask"), SHOTS / "ask.png")
            assert not page.locator('[data-testid="stException"]').count()
        finally:
            browser.close()

    memory = rss_mb(process.pid)
    print(f"server RSS with both models loaded: {memory:.0f} MB; caption {caption!r}, answer {answer!r}")
    record = {
        "upload_to_caption_seconds": round(sorted(timings)[len(timings) // 2], 3),  # the median
        "upload_to_caption_seconds_each": [round(t, 3) for t in timings],
        "load_average_1min": round(load, 2),
        "server_rss_mb": round(memory, 1),
        "models": label,
        "caption": caption,
        "question": QUESTION,
        "answer": answer,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "screenshots_bytes": {"caption.png": caption_png, "ask.png": ask_png},
    }
    (SHOTS / "timing.json").write_text(json.dumps(record, indent=2) + "\n")
    assert caption_png < MAX_SCREENSHOT_BYTES and ask_png < MAX_SCREENSHOT_BYTES
    assert memory < 1536, f"server uses {memory:.0f} MB"
    # The goal is 1 s on this 2-core machine (timing.json has the measurement); the bound
    # here leaves room for a machine busy with other work.
    assert min(timings) < 5.0


def test_file_names_and_typed_paths_never_become_links(server, tmp_path):
    """Streamlit's Markdown links bare "www." text, e-mail addresses and URLs: the app's lines
    that repeat what a visitor gave (a file's name, a typed path) must stay plain text."""
    from playwright.sync_api import sync_playwright

    url, _, _ = server
    name = "see www.evil.com and me@evil.com.png"
    path = tmp_path / name
    path.write_bytes(b"not an image, just text\n" * 10)
    typed = "runs/http://evil.com/x.pt"  # inside the models folder: its error line repeats it
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.get_by_text("VQA model:", exact=False).first.wait_for(timeout=120_000)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
            error = page.locator('[data-testid="stAlertContentError"]').filter(has_text="cannot be used")
            error.wait_for(timeout=30_000)
            assert name in error.inner_text().replace(logic.WORD_JOINER, "")
            assert error.locator("a").count() == 0, error.inner_html()

            page.locator(".st-key-vqa_choice").get_by_text("Checkpoint file").click()
            box = page.locator(".st-key-vqa_path input")
            box.fill(typed)
            box.press("Enter")
            error = page.locator('[data-testid="stSidebar"] [data-testid="stAlertContentError"]')
            error.filter(has_text="checkpoint not found").wait_for(timeout=30_000)
            assert typed in error.inner_text().replace(logic.WORD_JOINER, "")
            assert error.locator("a").count() == 0, error.inner_html()
            assert page.locator("a[href*='evil']").count() == 0
        finally:
            browser.close()


def test_caption_and_ask_are_one_tap_away_at_phone_width(server, tmp_path):
    """At 400 px wide, the tabs (Caption, Ask, ...) sit right under the image, well above the fold."""
    from playwright.sync_api import sync_playwright

    url, _, _ = server
    scene = scene_file(tmp_path, 1)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 400, "height": 800})
            page.goto(url)
            page.get_by_text("VQA model:", exact=False).first.wait_for(timeout=120_000)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(scene))
            ask_tab = page.get_by_role("tab", name="Ask")
            ask_tab.wait_for(timeout=30_000)
            top = page.evaluate("el => el.getBoundingClientRect().top + window.scrollY", ask_tab.element_handle())
            scroller = page.locator('[data-testid="stMain"]')
            top += scroller.evaluate("el => el.scrollTop") if scroller.count() else 0
            print(f"\nAsk tab at {top:.0f} px from the top of the page at 400 px width")
            assert top < 1600, top
            ask_tab.click()
            page.locator(".st-key-question input").wait_for(state="visible", timeout=15_000)
        finally:
            browser.close()
