"""The review page end to end in headless Chromium (Debian `chromium` + Playwright).

A real uvicorn server runs in a thread over a real database: a generated video and a
folder of generated images ingested with the real model, a faiss index, and a bulk source
of 1,100 frames so a 1,000-result run exists. Screenshots go to the test's tmp directory.
Chromium comes from Debian (`apt-get install chromium`, as .ci/run does); never from
`playwright install`. Without /usr/bin/chromium or Playwright these tests skip.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from conftest import create_database_from_template

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.db.embedded import EmbeddedServer
from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest
from sisyphus_db.label.labels import add_labels
from sisyphus_db.media import synthetic
from sisyphus_db.search.indexing import build_faiss_index, resolve_model
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import upsert_source

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]
BULK_FRAMES = 1_100
LABEL = "road works"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not CHROMIUM.exists():
    pytest.skip("needs Debian chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (the test extra)")
uvicorn = pytest.importorskip("uvicorn")


@dataclass
class Served:
    url: str
    db: Database
    video_source: int
    folder_source: int
    bulk_source: int
    video_frames: list[int]          # in time order
    folder_frames: list[int]
    bulk_frames: list[int]
    query_image: Path                # one of the folder's images
    query_frame: int                 # its frame id


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _frames_of(db: Database, source_id: int) -> list[int]:
    with db.transaction() as conn:
        return [int(i) for i in conn.execute(sa.text(
            "SELECT id FROM frames WHERE source_id = :s ORDER BY pts_seconds, frame_index, id"), {"s": source_id}).scalars()]


def _source_id(db: Database, uri: Path) -> int:
    with db.transaction() as conn:
        return int(conn.execute(sa.text("SELECT id FROM sources WHERE uri = :u"), {"u": str(uri)}).scalar_one())


def _bulk_source(db: Database, folder: Path, model_id: int, dim: int) -> int:
    """1,100 frames with random vectors (far from every real image) under the real model, so a
    search from one of them returns a run of 1,000. They all show one real picture."""
    picture = synthetic.write_test_image(folder / "bulk.jpg", 99, size=(160, 120))
    source = upsert_source(db, uri=str(folder), kind="folder", tags={"set": "bulk"}, keyframe_method="image")
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((BULK_FRAMES, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [FrameRow(source_id=source.id, frame_index=i, pts_seconds=0.0, path=str(picture), width=160, height=120,
                     sha256=hashlib.sha256(f"bulk-{i}".encode()).hexdigest(), keyframe_method="image")
            for i in range(BULK_FRAMES)]
    load_frames(db, model_id, rows, vectors)
    return source.id


@pytest.fixture(scope="module")
def served(pg_server: EmbeddedServer, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from sisyphus_db.serve.app import create_app
    from sisyphus_db.serve.state import ServeConfig

    root = tmp_path_factory.mktemp("serve-browser")
    url = create_database_from_template(pg_server)
    settings = Settings(home=root / "home", database_url=url)
    db = open_database(settings)
    video = root / "drive.mp4"
    synthetic.write_test_video(video, synthetic.default_segments(4, 2.0), fps=10, size=(320, 240))
    folder = root / "photos"
    images = [synthetic.write_test_image(folder / f"{seed:02d}.jpg", seed, size=(320, 240)) for seed in range(1, 9)]
    summary = run_ingest(db, [video, folder], IngestOptions(tags={"set": "demo"}, workers=1))
    assert summary.errors == 0 and summary.frames >= 10, summary.to_json()
    model = resolve_model(db, None)
    bulk = _bulk_source(db, root / "bulk", model.id, model.dim)
    build_faiss_index(db, model)
    video_source, folder_source = _source_id(db, video), _source_id(db, folder)
    folder_frames = _frames_of(db, folder_source)
    with db.transaction() as conn:
        query_frame = int(conn.execute(sa.text("SELECT id FROM frames WHERE path = :p"),
                                       {"p": str(images[2])}).scalar_one())

    port = _free_port()
    app = create_app(ServeConfig(settings=settings, host="127.0.0.1", port=port), db=db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.2)
    try:
        yield Served(base, db, video_source, folder_source, bulk, _frames_of(db, video_source), folder_frames,
                     _frames_of(db, bulk), images[2], query_frame)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        db.dispose()
        with psycopg.connect(pg_server.socket_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.split("/")[-1].split("?")[0]}" WITH (FORCE)')


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _api(served: Served, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(served.url + path, data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _cards(page: Any) -> Any:
    return page.locator("#grid > .card")


def _card_frame_ids(page: Any) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("#grid > .card", "cards => cards.map(c => c.dataset.frameId)")]


def _shot(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=False)
    print(f"screenshot: {path}")
    return path


def _labels(served: Served, name: str) -> dict[int, tuple[bool, str, str, int | None]]:
    with served.db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, positive, origin, created_by, run_id FROM labels WHERE label = :n"),
                            {"n": name}).all()
    return {int(r[0]): (bool(r[1]), r[2], r[3], r[4]) for r in rows}


# ---- search, review with the keyboard, labels in PostgreSQL ---------------------------------------


def test_upload_search_click_and_label_with_the_keyboard(served: Served, page: Any, tmp_path: Path) -> None:
    posts: list[dict[str, Any]] = []
    page.on("request", lambda r: posts.append(json.loads(r.post_data or "{}"))
            if r.method == "POST" and r.url.endswith("/api/labels") else None)
    page.goto(served.url + "/")
    page.fill("#label", LABEL)
    page.press("#label", "Enter")
    page.fill("#k", "12")
    # A tag filter keeps the bulk source (random vectors) out.
    page.click(".filters summary")
    page.fill("#tag-key", "set")
    page.fill("#tag-value", "demo")
    page.set_input_files("#file", str(served.query_image))

    expect = sync_api.expect
    expect(page.locator("#summary-text")).to_contain_text("12 results")
    cards = _cards(page)
    expect(cards).to_have_count(12)
    ids = _card_frame_ids(page)
    assert ids[0] == served.query_frame  # the uploaded picture is stored: it comes back first
    assert float(cards.nth(0).locator(".distance").inner_text()) < 0.01
    distances = [float(t) for t in cards.locator(".distance").all_inner_texts()]
    assert distances == sorted(distances)
    assert not set(ids) & set(served.bulk_frames)
    assert cards.nth(0).locator(".meta .src").inner_text() == "photos"
    assert all(img == "lazy" for img in page.eval_on_selector_all("#grid img", "imgs => imgs.map(i => i.loading)"))
    # The thumbnails really load (a JPEG from the API), not broken images.
    page.wait_for_function("() => [...document.querySelectorAll('#grid img')].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)")

    # Click "Search from this" on the fourth card: a new run from that frame.
    fourth = ids[3]
    cards.nth(3).locator("button[data-action=search]").click()
    expect(page.locator("#summary-text")).to_contain_text(f"frame {fourth}")
    expect(cards.first).to_have_attribute("data-frame-id", str(fourth))
    run_id = int(page.locator("#summary-text").inner_text().split("run #")[1].split()[0])
    ids = _card_frame_ids(page)

    # Keyboard: the first card has focus; p, p (focus moves on), n.
    expect(cards.first).to_be_focused()
    page.keyboard.press("p")
    expect(cards.nth(0)).to_have_attribute("data-mark", "pos")
    expect(cards.nth(1)).to_be_focused()
    page.keyboard.press("p")
    expect(cards.nth(1)).to_have_attribute("data-mark", "pos")
    page.keyboard.press("n")
    expect(cards.nth(2)).to_have_attribute("data-mark", "neg")
    expect(cards.nth(0).locator(".chip.pos")).to_contain_text(LABEL)
    expect(cards.nth(2).locator(".chip.neg")).to_contain_text(LABEL)
    # The current-label field autocompletes from the labels that now exist.
    expect(page.locator(f"#label-options option[value='{LABEL}']")).to_have_count(1)
    rows = _labels(served, LABEL)
    assert set(rows) == set(ids[:3])
    assert [rows[i][0] for i in ids[:3]] == [True, True, False]
    assert all(origin == "manual" and created_by and run == run_id for _, origin, created_by, run in rows.values())

    # Select two with x (moving with the arrow key), mark both negative in one request, then u removes one.
    page.keyboard.press("ArrowRight")  # focus was on the fourth card after n
    expect(cards.nth(4)).to_be_focused()
    page.keyboard.press("x")
    page.keyboard.press("l")
    page.keyboard.press("x")
    expect(page.locator("#selection-info")).to_have_text("2 selected")
    before = len(posts)
    page.keyboard.press("n")
    expect(cards.nth(5)).to_have_attribute("data-mark", "neg")
    expect(cards.nth(4)).to_have_attribute("data-mark", "neg")
    assert len(posts) == before + 1 and posts[-1]["frame_ids"] == ids[4:6] and posts[-1]["positive"] is False
    expect(page.locator("#status")).to_contain_text("2 frames marked negative")
    page.keyboard.press("u")
    expect(cards.nth(5)).to_have_attribute("data-mark", "")
    rows = _labels(served, LABEL)
    assert set(rows) == {*ids[:3], ids[4]} and rows[ids[4]][0] is False

    # Shift+click selects a range; Escape clears it.
    cards.nth(6).click(position={"x": 20, "y": 20})
    cards.nth(9).click(position={"x": 20, "y": 20}, modifiers=["Shift"])
    expect(page.locator("#selection-info")).to_have_text("4 selected")
    page.keyboard.press("Escape")
    expect(page.locator("#selection-info")).to_have_text("")

    # The help lists the keys.
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    expect(page.locator("#help")).to_contain_text("more like these")
    page.keyboard.press("Escape")
    # Enter opens the focused frame large, with its image from the API.
    cards.nth(1).click(position={"x": 20, "y": 20})
    page.keyboard.press("Enter")
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#viewer-text")).to_contain_text(f"frame {ids[1]}")
    page.wait_for_function("() => document.getElementById('viewer-image').naturalWidth > 0")
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    # Every button has a name a screen reader can say.
    unnamed = page.evaluate("() => [...document.querySelectorAll('button')].filter(b => !(b.getAttribute('aria-label') || b.textContent.trim())).length")
    assert unnamed == 0
    page.mouse.move(0, 0)
    shot = _shot(page, tmp_path / "results.png")
    assert shot.stat().st_size > 10_000


def test_more_like_these_shows_the_proposals_of_discover(served: Served, page: Any) -> None:
    name = "blobs"
    add_labels(served.db, name, served.folder_frames[:2], positive=True, created_by="test")
    page.goto(served.url + "/?" + f"label={name}&k=5")
    page.click("#discover")
    expect = sync_api.expect
    expect(page.locator("#summary-text")).to_contain_text("more like")
    expect(_cards(page)).to_have_count(5)
    ids = _card_frame_ids(page)
    assert not set(ids) & set(served.folder_frames[:2])  # labelled frames are never proposed
    assert "method" in page.locator("#summary-text").inner_text()


def _run_of_summary(page: Any) -> int:
    return int(page.locator("#summary-text").inner_text().split("run #")[1].split()[0])


def test_more_like_these_appends_the_new_proposals_below_the_shown_results(served: Served, page: Any) -> None:
    name = "appended"
    add_labels(served.db, name, served.folder_frames[:2], positive=True, created_by="test")
    expect = sync_api.expect
    cards = _cards(page)
    page.goto(served.url + "/?" + f"label={name}&k=6&frame={served.video_frames[0]}")
    expect(page.locator("#summary-text")).to_contain_text(f"frame {served.video_frames[0]}")
    expect(cards).to_have_count(6)
    search_run = _run_of_summary(page)
    before = _card_frame_ids(page)
    expect(cards.first).to_be_focused()

    page.keyboard.press("d")
    expect(page.locator("#summary-text")).to_contain_text("more like")
    discover_run = _run_of_summary(page)
    assert discover_run != search_run
    proposals = [row["frame_id"] for row in _api(served, f"/api/runs/{discover_run}")["results"]]
    new = [frame for frame in proposals if frame not in before]
    assert new and not set(proposals) & set(served.folder_frames[:2])
    expect(cards).to_have_count(6 + len(new))
    ids = _card_frame_ids(page)
    assert ids == before + new  # the shown results stay, in place; duplicates are skipped
    # The new cards show their discover score and distance, the old ones keep their distance.
    for index in range(6, len(ids)):
        expect(cards.nth(index).locator(".score")).to_be_visible()
        expect(cards.nth(index).locator(".distance")).to_be_visible()
    expect(cards.nth(0).locator(".distance")).to_be_visible()
    expect(page.locator("#status")).to_contain_text(f"{len(new)} new")
    # The keyboard goes on from the first new card; a label set on it belongs to the discover run,
    # one set on an older card to the search it came from.
    expect(cards.nth(6)).to_be_focused()
    page.keyboard.press("p")
    expect(cards.nth(6)).to_have_attribute("data-mark", "pos")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(cards.nth(5)).to_be_focused()
    page.keyboard.press("n")
    expect(cards.nth(5)).to_have_attribute("data-mark", "neg")
    rows = _labels(served, name)
    assert rows[ids[6]][0] is True and rows[ids[6]][3] == discover_run
    assert rows[ids[5]][0] is False and rows[ids[5]][3] == search_run

    # Once more, deeper: the list grows again, still without duplicates and without the labelled frames.
    page.fill("#k", "30")
    page.click("#discover")
    expect(page.locator("#summary-text")).not_to_contain_text(f"run #{discover_run}")
    again = [row["frame_id"] for row in _api(served, f"/api/runs/{_run_of_summary(page)}")["results"]]
    more = [frame for frame in again if frame not in ids]
    assert more and ids[6] not in again and ids[5] not in again
    expect(cards).to_have_count(len(ids) + len(more))
    grown = _card_frame_ids(page)
    assert grown == ids + more and len(set(grown)) == len(grown)
    expect(cards.nth(len(ids))).to_be_focused()
    # The same request again proposes only frames already shown: nothing is added, and it says so.
    page.click("#discover")
    expect(page.locator("#status")).to_contain_text("no new proposals")
    assert _card_frame_ids(page) == grown


def test_errors_from_the_api_show_on_the_status_line(served: Served, page: Any) -> None:
    page.goto(served.url + "/")
    page.fill("#label", "")
    page.set_input_files("#file", files=[{"name": "fake.png", "mimeType": "image/png", "buffer": b"not an image"}])
    expect = sync_api.expect
    expect(page.locator("#status")).to_have_attribute("data-kind", "error")
    assert page.locator("#status").inner_text().strip()
    page.goto(served.url + "/?frame=999999999")
    expect(page.locator("#status")).to_contain_text("999999999")
    expect(_cards(page)).to_have_count(0)


# ---- the source timeline ------------------------------------------------------------------------------


def test_source_timeline_shows_key_frames_marks_and_plays_from_a_frame(served: Served, page: Any,
                                                                       tmp_path: Path) -> None:
    name = "timeline"
    frames = served.video_frames
    add_labels(served.db, name, [frames[1]], positive=True, created_by="test")
    add_labels(served.db, name, [frames[-1]], positive=False, created_by="test")
    run = _api(served, "/api/search", {"frame_id": frames[2], "k": 5, "backend": "exact",
                                       "filters": [{"field": "frames.source_id", "op": "=", "value": served.video_source}]})
    hits = [hit["frame_id"] for hit in run["results"]]
    page.goto(f"{served.url}/sources/{served.video_source}?label={name}&run_id={run['run_id']}&frame={frames[2]}")
    page.wait_for_selector("body[data-ready=true]")
    expect = sync_api.expect
    expect(page.locator("#title")).to_have_text("drive.mp4")
    expect(page.locator(".strip .frame")).to_have_count(len(frames))
    expect(page.locator(".mark.pos")).to_have_count(1)
    expect(page.locator(".mark.neg")).to_have_count(1)
    unlabelled_hits = [f for f in hits if f not in (frames[1], frames[-1])]
    expect(page.locator(".mark.hit")).to_have_count(len(unlabelled_hits))
    # Marks sit at their frame's time: the negative (last key frame) right of the positive.
    left = page.eval_on_selector(".mark.pos", "m => parseFloat(m.style.left)")
    right = page.eval_on_selector(".mark.neg", "m => parseFloat(m.style.left)")
    assert 0 <= left < right <= 100
    expect(page.locator(".strip .frame.pos")).to_have_count(1)
    expect(page.locator("#picked-text")).to_contain_text(f"frame {frames[2]}")

    # The player streams the video from the API; clicking a frame plays from its time.
    video = page.locator("#player")
    assert video.get_attribute("src").endswith(f"/api/sources/{served.video_source}/video")
    page.wait_for_function("() => { const v = document.getElementById('player'); return v.readyState >= 1 || v.error; }")
    playable = page.evaluate("() => !document.getElementById('player').error")
    target = page.locator(".strip .frame").nth(1)  # the page opened at frames[2]: this moves back
    pts = _api(served, f"/api/frames/{frames[1]}")["pts_seconds"]
    target.locator("button").click()
    expect(page.locator("#picked-text")).to_contain_text(f"frame {frames[1]}")
    if playable:  # Debian's chromium plays H.264; another build may not, and then says so
        page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {pts}) < 0.6")
    else:
        expect(page.locator("#player-note")).to_be_visible()
    page.evaluate("() => document.getElementById('player').pause()")
    page.evaluate(f"() => {{ document.getElementById('player').currentTime = {pts}; }}")
    shot = _shot(page, tmp_path / "timeline.png")
    assert shot.stat().st_size > 10_000


def test_an_image_folder_shows_a_strip_without_a_player(served: Served, page: Any) -> None:
    page.goto(f"{served.url}/sources/{served.folder_source}")
    page.wait_for_selector("body[data-ready=true]")
    sync_api.expect(page.locator(".strip .frame")).to_have_count(len(served.folder_frames))
    assert page.locator("#player-box").is_hidden()
    page.locator(".strip .frame").first.locator("button").click()
    sync_api.expect(page.locator("#search-here")).to_have_attribute(
        "href", f"/?frame={served.folder_frames[0]}")


# ---- a run of 1,000 results ------------------------------------------------------------------------


def test_a_run_of_1000_results_renders_a_page_at_a_time(served: Served, page: Any) -> None:
    query = served.bulk_frames[0]
    page.goto(f"{served.url}/?frame={query}&k=1000&backend=exact")
    expect = sync_api.expect
    expect(page.locator("#summary-text")).to_contain_text("1000 results")
    cards = _cards(page)
    expect(cards).to_have_count(60)
    expect(page.locator("#more-info")).to_have_text("showing 60 of 1000")
    # The page answers at once: a frame is painted within a short time and keys move the focus.
    lag = page.evaluate("() => new Promise(r => { const t = performance.now(); requestAnimationFrame(() => r(performance.now() - t)); })")
    assert lag < 500, lag
    started = time.perf_counter()
    page.keyboard.press("End")
    expect(cards.nth(59)).to_be_focused()
    page.keyboard.press("ArrowDown")  # past the last rendered card: the next page is rendered
    _at_least(page, 120)
    assert time.perf_counter() - started < 5
    # Scrolling to the end adds the next page (IntersectionObserver), never all 1,000 at once.
    shown = _card_count(page)
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    _at_least(page, shown + 60)
    # "Load more" adds one page and moves the focus to its first card. (Dispatched: Playwright's
    # click would scroll after the moving button and let the infinite scroll add pages meanwhile.)
    time.sleep(0.5)
    shown = _card_count(page)
    page.locator("#load-more").dispatch_event("click")
    _at_least(page, shown + 60)
    expect(cards.nth(shown)).to_be_focused()
    shown = _card_count(page)
    assert shown % 60 == 0 and shown <= 360, shown
    ranks = [int(t.lstrip("#")) for t in cards.locator(".rank").all_text_contents()]
    assert ranks == list(range(1, shown + 1))
    expect(page.locator("#more-info")).to_have_text(f"showing {shown} of 1000")

    # The same run opened by id pages through GET /api/runs/{id}.
    run_id = int(page.locator("#summary-text").inner_text().split("run #")[1].split()[0])
    page.goto(f"{served.url}/?run={run_id}")
    expect(page.locator("#summary-text")).to_contain_text("1000 results")
    expect(cards).to_have_count(60)
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    _at_least(page, 120)
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    _at_least(page, 180)
    shown = _card_count(page)
    ranks = [int(t.lstrip("#")) for t in cards.locator(".rank").all_text_contents()]
    assert ranks == list(range(1, shown + 1)) and shown < 1000


def _card_count(page: Any) -> int:
    return int(page.evaluate("() => document.querySelectorAll('#grid > .card').length"))


def _at_least(page: Any, count: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('#grid > .card').length >= {count}")


# ---- drop an image; the token rule ------------------------------------------------------------------


def test_dropping_an_image_on_the_page_searches_with_it(served: Served, page: Any) -> None:
    page.goto(served.url + "/?k=5")
    page.evaluate("""async (url) => {
        const blob = await (await fetch(url)).blob();
        const data = new DataTransfer();
        data.items.add(new File([blob], "dropped.jpg", { type: "image/jpeg" }));
        document.querySelector("main").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
    }""", f"/api/frames/{served.query_frame}/image")
    sync_api.expect(page.locator("#summary-text")).to_contain_text("image dropped.jpg")
    sync_api.expect(_cards(page)).to_have_count(5)
    assert _card_frame_ids(page)[0] == served.query_frame


def test_with_a_token_the_page_sends_it_on_every_request(served: Served, page: Any, tmp_path: Path) -> None:
    from sisyphus_db.serve.app import create_app
    from sisyphus_db.serve.auth import read_tokens
    from sisyphus_db.serve.state import ServeConfig

    token = "t0ken-for-the-review-page-test"
    token_file = tmp_path / "tokens"
    token_file.write_text(f"alice {token}\n")
    token_file.chmod(0o600)
    port = _free_port()
    settings = served.db.settings
    app = create_app(ServeConfig(settings=settings, host="127.0.0.1", port=port, tokens=read_tokens(token_file)),
                     db=served.db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/", timeout=10)
        assert refused.value.code == 401
        frame = served.folder_frames[-1]
        page.goto(f"{base}/?token={token}&frame={frame}&k=4&label=tokened")
        cards = _cards(page)
        sync_api.expect(cards).to_have_count(4)
        page.wait_for_function("() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)")
        page.keyboard.press("p")
        sync_api.expect(cards.first).to_have_attribute("data-mark", "pos")
        rows = _labels(served, "tokened")
        assert rows == {frame: (True, "manual", "alice", rows[frame][3])}
        # Links keep the token: the source page opens and loads its frames.
        cards.first.locator(".meta .src").click()
        page.wait_for_selector("body[data-ready=true]")
        assert f"token={token}" in page.url
        sync_api.expect(page.locator(".strip .frame")).to_have_count(len(served.folder_frames))
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_a_large_source_lists_its_frames_a_page_at_a_time(served: Served, page: Any) -> None:
    page.goto(f"{served.url}/sources/{served.bulk_source}")
    page.wait_for_selector("body[data-ready=true]")
    expect = sync_api.expect
    expect(page.locator("#facts")).to_contain_text(f"{BULK_FRAMES} key frames")
    # Pages of 60 fill the screen and a little more, then stop until the reader scrolls.
    time.sleep(1)
    shown = page.locator(".strip .frame").count()
    assert shown % 60 == 0 and 60 <= shown <= 240, shown
    expect(page.locator("#more-info")).to_have_text(f"showing {shown} of {BULK_FRAMES}")
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function(f"() => document.querySelectorAll('.strip .frame').length >= {shown + 60}")
    assert page.locator(".strip .frame").count() < BULK_FRAMES
    # The track holds every key frame (fetched in pages of 500), drawn on a canvas.
    drawn = page.evaluate("""() => { const c = document.getElementById('ticks');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
    assert drawn > 0


def test_the_filter_controls_narrow_the_search(served: Served, page: Any) -> None:
    page.goto(f"{served.url}/?k=50")
    page.click(".filters summary")
    page.select_option("#source-filter", str(served.video_source))
    page.fill("#time-from", "1")
    page.fill("#time-to", "5")
    page.set_input_files("#file", str(served.query_image))
    expect = sync_api.expect
    expect(page.locator("#summary-text")).to_contain_text("results")
    expect(page.locator("#filter-count")).to_have_text("(2)")
    ids = _card_frame_ids(page)
    with served.db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT id, source_id, pts_seconds FROM frames WHERE source_id = :s "
                                    "AND pts_seconds BETWEEN 1 AND 5"), {"s": served.video_source}).all()
    assert ids and set(ids) == {int(r[0]) for r in rows}
