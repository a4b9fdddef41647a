// The source page: one video's key frames on a timeline, marks for a label and a run, the player.

import { api, baseName, el, formatTime, frameImageUrl, frameThumbUrl, listOf, pageUrl, plural, status, withToken } from "./common.js";

const PAGE = 60;            // strip thumbnails added at a time
const FETCH = 500;          // frames per API page
const MAX_TICKS = 20000;    // frames fetched for the track; a longer source shows the first ones
const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const sourceId = Number(location.pathname.split("/").filter(Boolean).pop());
const runId = query.get("run_id") || query.get("run");

const state = { source: null, frames: [], total: 0, rendered: 0, duration: 0, byId: new Map(), marks: new Map(), picked: null };

// ---- loading ------------------------------------------------------------------------------

async function loadFrames() {
  for (let offset = 0; offset < MAX_TICKS; offset += FETCH) {
    const data = await api(`/api/sources/${sourceId}/frames?offset=${offset}&limit=${FETCH}`);
    if (!state.source) state.source = data.source || null;
    const frames = listOf(data, "frames");
    for (const frame of frames) {
      frame.frame_id ??= frame.id;
      state.byId.set(frame.frame_id, frame);
    }
    state.frames.push(...frames);
    state.total = data.total ?? data.count ?? state.frames.length;
    if (frames.length < FETCH || state.frames.length >= state.total) break;
  }
  state.total = Math.max(state.total, state.frames.length);
}

async function loadSourceFacts() {
  if (state.source) return;
  try { state.source = await api(`/api/sources/${sourceId}`); } catch { state.source = null; }
}

function addMark(frameId, kind, title) {
  const entry = state.marks.get(frameId) || { kinds: new Set(), titles: [] };
  entry.kinds.add(kind);
  entry.titles.push(title);
  state.marks.set(frameId, entry);
}

async function loadLabelMarks(name) {
  if (!name) return 0;
  try {
    const data = await api(`/api/labels/${encodeURIComponent(name)}`);
    let n = 0;
    for (const [key, kind] of [["positive_frames", "pos"], ["negative_frames", "neg"]]) {
      for (const frame of data[key] || []) {
        if (Number(frame.source_id) !== sourceId) continue;
        addMark(frame.frame_id, kind, `${kind === "pos" ? "positive" : "negative"} \u201c${name}\u201d (${frame.origin || "manual"})`);
        n += 1;
      }
    }
    return n;
  } catch (err) {
    status(`label \u201c${name}\u201d: ${err.message}`, "warn");
    return 0;
  }
}

async function loadRunMarks(id) {
  if (!id) return 0;
  let n = 0;
  try {
    for (let offset = 0; offset < 5000; offset += FETCH) {
      const data = await api(`/api/runs/${id}?offset=${offset}&limit=${FETCH}`);
      const hits = listOf(data, "results", "hits");
      for (const hit of hits) {
        if (Number(hit.source_id) !== sourceId) continue;
        addMark(hit.frame_id, "hit", `result #${hit.rank} of run ${id}, distance ${Number(hit.distance).toFixed(3)}`);
        n += 1;
      }
      const total = data.total ?? data.count ?? hits.length;
      if (hits.length < FETCH || offset + hits.length >= total) break;
    }
  } catch (err) {
    status(`run ${id}: ${err.message}`, "warn");
  }
  return n;
}

// ---- the track -----------------------------------------------------------------------------

const isVideo = () => (state.source?.kind ?? "video") === "video" && state.duration > 0;
// Video frames sit at their time; the frames of an image folder are spread by their order.
function position(frame, index) {
  if (isVideo()) return Math.min(1, Math.max(0, frame.pts_seconds / state.duration));
  return state.frames.length > 1 ? index / (state.frames.length - 1) : 0.5;
}

function drawTicks() {
  const canvas = $("ticks");
  const width = canvas.clientWidth, height = canvas.clientHeight;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = getComputedStyle(canvas).color;
  state.frames.forEach((frame, i) => {
    const x = Math.round(position(frame, i) * (width - 1));
    ctx.fillRect(x, height * 0.3, 1, height * 0.4);
  });
}

function drawMarks() {
  const index = new Map(state.frames.map((frame, i) => [frame.frame_id, i]));
  const marks = [];
  for (const [frameId, entry] of state.marks) {
    if (!index.has(frameId)) continue;
    const frame = state.frames[index.get(frameId)];
    const kinds = [...entry.kinds];
    const kind = kinds.includes("pos") ? "pos" : kinds.includes("neg") ? "neg" : "hit";
    marks.push(el("button", {
      type: "button", class: `mark ${kind}${entry.kinds.has("hit") && kind !== "hit" ? " also-hit" : ""}`,
      style: `left: ${(position(frame, index.get(frameId)) * 100).toFixed(3)}%`,
      title: `${place(frame, index.get(frameId))}: ${entry.titles.join("; ")}`,
      "aria-label": `frame ${frameId} ${place(frame, index.get(frameId))}: ${entry.titles.join("; ")}`,
      dataset: { frameId: String(frameId) }, onclick: () => pick(frame, { play: true }),
    }));
  }
  $("marks").replaceChildren(...marks);
}

$("track").addEventListener("click", (event) => {
  if (event.target.closest(".mark") || !state.frames.length) return;
  const box = $("track").getBoundingClientRect();
  const at = (event.clientX - box.left) / box.width;
  let best = 0, bestGap = Infinity;
  state.frames.forEach((frame, i) => {
    const gap = Math.abs(position(frame, i) - at);
    if (gap < bestGap) { best = i; bestGap = gap; }
  });
  pick(state.frames[best], { play: true });
});

// ---- the strip (paged) ----------------------------------------------------------------------

// Where a frame sits: its time in a video, its place in an image folder (1-based).
const place = (frame, index) => (isVideo() ? formatTime(frame.pts_seconds) : `#${index + 1}`);

function thumb(frame, index) {
  const entry = state.marks.get(frame.frame_id);
  const kinds = entry ? [...entry.kinds] : [];
  const thumbUrl = frame.thumbnail_url ? withToken(frame.thumbnail_url) : frameThumbUrl(frame.frame_id);
  return el("li", { class: `frame ${kinds.join(" ")}`, dataset: { frameId: String(frame.frame_id) } },
    el("button", { type: "button", "aria-label": `frame ${frame.frame_id} ${place(frame, index)}${entry ? ": " + entry.titles.join("; ") : ""}`,
                   onclick: () => pick(frame, { play: true }) },
      el("img", { src: thumbUrl, loading: "lazy", decoding: "async", alt: "", width: String(frame.width || 4), height: String(frame.height || 3) }),
      el("span", { class: "time", text: place(frame, index) })));
}

function renderMore() {
  const end = Math.min(state.rendered + PAGE, state.frames.length);
  const fragment = document.createDocumentFragment();
  for (let i = state.rendered; i < end; i += 1) fragment.append(thumb(state.frames[i], i));
  $("strip").append(fragment);
  state.rendered = end;
  $("more").hidden = state.rendered >= state.frames.length;
  $("more-info").textContent = `showing ${state.rendered} of ${state.frames.length}`;
  watchSentinel();
}

// An observer reports changes only: after each page it observes again, so a sentinel still
// in range (cards shorter than the screen) brings the next page too.
const sentinelObserver = new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting) && state.rendered < state.frames.length) renderMore();
}, { rootMargin: "400px" });
sentinelObserver.observe($("sentinel"));
function watchSentinel() {
  sentinelObserver.unobserve($("sentinel"));
  sentinelObserver.observe($("sentinel"));
}
$("load-more").addEventListener("click", () => {
  const first = state.rendered;
  renderMore();
  $("strip").children[first]?.querySelector("button").focus();
});

// ---- picking and playing ---------------------------------------------------------------------

function pick(frame, { play = false } = {}) {
  state.picked = frame;
  for (const node of document.querySelectorAll(".strip .frame.picked")) node.classList.remove("picked");
  document.querySelector(`.strip .frame[data-frame-id="${frame.frame_id}"]`)?.classList.add("picked");
  $("picked").hidden = false;
  $("picked-image").src = frameImageUrl(frame.frame_id);
  $("picked-image").alt = `frame ${frame.frame_id}`;
  const entry = state.marks.get(frame.frame_id);
  $("picked-text").textContent = [`frame ${frame.frame_id}`, place(frame, state.frames.indexOf(frame)),
    entry ? entry.titles.join("; ") : ""].filter(Boolean).join(" \u00b7 ");
  $("search-here").href = pageUrl("/", { frame: frame.frame_id, label: $("label").value.trim() || undefined });
  $("play-here").hidden = !isVideo();
  if (play && isVideo()) seek(frame.pts_seconds, true);
}

function seek(seconds, play) {
  const video = $("player");
  if (video.error) return;
  const go = () => {
    video.currentTime = seconds;
    if (play) video.play().catch(() => { /* autoplay may be refused; the position is set */ });
  };
  if (video.readyState >= 1) go(); else video.addEventListener("loadedmetadata", go, { once: true });
}

$("play-here").addEventListener("click", () => { if (state.picked) seek(state.picked.pts_seconds, true); });

function setUpPlayer() {
  if (!isVideo()) return;
  const video = $("player");
  $("player-box").hidden = false;
  video.addEventListener("error", () => {
    $("player-note").hidden = false;
    $("player-note").textContent = "This browser cannot play this video file; the key frames are below.";
    $("player-box").classList.add("unplayable");
  });
  video.addEventListener("timeupdate", () => {
    const head = $("playhead");
    head.hidden = false;
    head.style.left = `${Math.min(100, (video.currentTime / state.duration) * 100)}%`;
  });
  video.src = withToken(`/api/sources/${sourceId}/video`);
}

// ---- start -----------------------------------------------------------------------------------

async function start() {
  const label = query.get("label") || localStorage.getItem("sisyphus.label") || "";
  $("label").value = label;
  $("back").href = pageUrl("/", { run: runId || undefined, label: label || undefined });
  try {
    await loadFrames();
  } catch (err) {
    $("title").textContent = `Source ${sourceId}`;
    status(err.message, "error");
    return;
  }
  await loadSourceFacts();
  const source = state.source || {};
  const maxPts = state.frames.reduce((m, f) => Math.max(m, f.pts_seconds || 0), 0);
  state.duration = source.duration_seconds || maxPts;
  $("title").textContent = baseName(source.uri) || `Source ${sourceId}`;
  $("title").title = source.uri || "";
  document.title = `sisyphus - ${$("title").textContent}`;
  const tags = Object.entries(source.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  $("facts").textContent = [source.kind, isVideo() ? formatTime(state.duration) : "", plural(state.total, "key frame"), tags]
    .filter(Boolean).join(" \u00b7 ");
  document.body.classList.add(isVideo() ? "is-video" : "is-images");
  $("axis-start").textContent = isVideo() ? formatTime(0) : "#1";
  $("axis-end").textContent = isVideo() ? formatTime(state.duration) : `#${state.frames.length}`;
  const [labelled, hits] = await Promise.all([loadLabelMarks(label), loadRunMarks(runId)]);
  const notes = [];
  if (label) notes.push(`${labelled} with \u201c${label}\u201d`);
  if (runId) notes.push(`${hits} in run ${runId}`);
  if (state.frames.length < state.total) notes.push(`first ${state.frames.length} of ${state.total} frames shown`);
  $("track-info").textContent = notes.join(" \u00b7 ");
  setUpPlayer();
  drawTicks();
  drawMarks();
  renderMore();
  const wanted = Number(query.get("frame"));
  const first = state.byId.get(wanted) || (query.get("t") ? nearest(Number(query.get("t"))) : null);
  if (first) pick(first, { play: false });
  if (first && isVideo()) seek(first.pts_seconds, false);
  window.addEventListener("resize", drawTicks);
  document.body.dataset.ready = "true";
}

function nearest(seconds) {
  let best = null;
  for (const frame of state.frames) {
    if (!best || Math.abs(frame.pts_seconds - seconds) < Math.abs(best.pts_seconds - seconds)) best = frame;
  }
  return best;
}

$("label").addEventListener("change", () => {
  const label = $("label").value.trim();
  localStorage.setItem("sisyphus.label", label);
  location.href = pageUrl(location.pathname, { label: label || undefined, run_id: runId || undefined, frame: state.picked?.frame_id });
});

start();
