// The search & review page: search by image or frame, page through results, label them.

import { api, baseName, el, formatTime, frameImageUrl, frameThumbUrl, isTyping, listOf, pageUrl, plural, status } from "./common.js";
import { renderChips, sourceLink } from "./cards.js";
import {
  PAGE, appendResults, cardAt, clearSelection, columns, currentLabel, grid, moveFocus, renderMore, resetResults, select,
  selectAll, selectRange, state, targets, updateSelectionInfo,
} from "./results.js";

const $ = (id) => document.getElementById(id);
const labelInput = $("label");
const query = new URLSearchParams(location.search);
// ---- filters from the form ------------------------------------------------------------

function filters() {
  const out = [];
  const key = $("tag-key").value.trim(), value = $("tag-value").value.trim();
  if (key) out.push(value ? { field: `sources.tags.${key}`, op: "=", value } : { field: `sources.tags.${key}`, op: "is_null", value: false });
  const source = $("source-filter").value;
  if (source) out.push({ field: "frames.source_id", op: "=", value: Number(source) });
  const from = $("time-from").value, to = $("time-to").value;
  if (from !== "" && to !== "") out.push({ field: "frames.pts_seconds", op: "between", value: [Number(from), Number(to)] });
  else if (from !== "") out.push({ field: "frames.pts_seconds", op: ">=", value: Number(from) });
  else if (to !== "") out.push({ field: "frames.pts_seconds", op: "<=", value: Number(to) });
  $("filter-count").textContent = out.length ? `(${out.length})` : "";
  return out;
}

function options() {
  const k = Number($("k").value) || 60;
  const perSource = $("per-source").value ? Number($("per-source").value) : null;
  const backend = $("backend").value || null;
  return { k, per_source: perSource, backend, filters: filters() };
}

// ---- searching --------------------------------------------------------------------------

async function run(describe, request, present = show) {
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  $("search-button").disabled = true;
  grid.setAttribute("aria-busy", "true");
  status("Searching\u2026");
  try {
    const data = await request(controller.signal);
    present(data, describe);
  } catch (err) {
    if (err.name !== "AbortError") status(err.message, "error");
  } finally {
    if (state.controller === controller) {
      $("search-button").disabled = false;
      grid.removeAttribute("aria-busy");
    }
  }
}

export function searchImage(file) {
  if (!file || !(file.type || "").startsWith("image/")) {
    status(file ? `${file.name} is not an image` : "no image given", "error");
    return;
  }
  const opts = options();
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  form.append("k", String(opts.k));
  if (opts.per_source) form.append("per_source", String(opts.per_source));
  if (opts.backend) form.append("backend", opts.backend);
  if (opts.filters.length) form.append("filters", JSON.stringify(opts.filters));
  const image = URL.createObjectURL(file);
  return run({ text: `image ${file.name || "(pasted)"}`, image },
    (signal) => api("/api/search/image", { method: "POST", form, signal }));
}

export function searchFrame(frameId) {
  const opts = options();
  const body = { frame_id: Number(frameId), k: opts.k, filters: opts.filters };
  if (opts.per_source) body.per_source = opts.per_source;
  if (opts.backend) body.backend = opts.backend;
  if ($("exclude-source").checked) body.exclude_source_of_query = true;
  return run({ text: `frame ${frameId}`, image: frameThumbUrl(frameId), frameId: Number(frameId) },
    (signal) => api("/api/search", { method: "POST", json: body, signal }));
}

function discover() {
  const name = needLabel();
  if (!name) return;
  const opts = options();
  const body = { k: opts.k, filters: opts.filters };
  if (opts.per_source) body.per_source = opts.per_source;
  return run({ text: `more like \u201c${name}\u201d` },
    (signal) => api(`/api/labels/${encodeURIComponent(name)}/discover`, { method: "POST", json: body, signal }),
    (data, describe) => (state.rendered ? appendProposals(data, describe) : show(data, describe)));
}

// "More like these" on a grid that shows results: the proposals go below them (the reviewer
// keeps what is on screen, its marks and the focus), skipping frames already shown.
function appendProposals(data, describe) {
  const shown = new Set(state.results.slice(0, state.rendered).map((hit) => hit.frame_id));
  const hits = listOf(data, "results", "proposals", "hits");
  const fresh = hits.filter((hit) => !shown.has(hit.frame_id) && shown.add(hit.frame_id));
  const skipped = hits.length - fresh.length;
  const note = skipped ? ` (${skipped} already shown)` : "";
  if (!fresh.length) {
    status(`no new proposals for ${describe.text}: ${plural(hits.length, "proposal")} already shown`, "warn");
    return;
  }
  const first = appendResults(fresh, { runId: data.run_id });
  const parts = [`Query: ${state.lastQuery ? `${state.lastQuery.text} + ` : ""}${describe.text}`,
    plural(state.total, "result"), `${fresh.length} new${note}`];
  if (data.elapsed_ms !== undefined) parts.push(`${Math.round(data.elapsed_ms)} ms`);
  if (state.runId) parts.push(`run #${state.runId}`);
  if (data.method) parts.push(`method ${data.method}`);
  $("summary-text").textContent = parts.join(" \u00b7 ");
  for (const warning of data.warnings || []) status(warning, "warn");
  if (!(data.warnings || []).length) status(`${fresh.length} new ${fresh.length === 1 ? "proposal" : "proposals"} added below${note}`);
  history.replaceState(null, "", pageUrl("/", { label: currentLabel() || undefined, run: state.runId || undefined }));
  moveFocus(first);
}

function openRun(runId) {
  const fetchPage = async (offset, limit) => {
    const data = await api(`/api/runs/${runId}?offset=${offset}&limit=${limit}`);
    return { hits: listOf(data, "results", "hits"), total: data.total ?? data.count ?? null, data };
  };
  return run({ text: `run ${runId}` }, async () => {
    const first = await fetchPage(0, PAGE * 2);
    const data = { ...first.data, run_id: first.data.run_id ?? first.data.id ?? Number(runId), results: first.hits };
    data.total = first.total ?? first.hits.length;
    data.fetchPage = async (offset, limit) => (await fetchPage(offset, limit)).hits;
    return data;
  });
}

function show(data, describe) {
  const hits = listOf(data, "results", "proposals", "hits");
  resetResults(hits, { total: data.total, fetchPage: data.fetchPage, runId: data.run_id });
  state.lastQuery = describe;
  $("empty").hidden = state.total > 0;
  $("empty").textContent = state.total ? "" : "No results: nothing matched the query and its filters.";
  const image = $("query-image");
  image.hidden = !describe.image;
  if (describe.image) image.src = describe.image;
  const parts = [`Query: ${describe.text}`, plural(state.total, "result")];
  if (data.elapsed_ms !== undefined) parts.push(`${Math.round(data.elapsed_ms)} ms`);
  if (state.runId) parts.push(`run #${state.runId}`);
  if (data.method) parts.push(`method ${data.method}`);
  $("summary-text").textContent = parts.join(" \u00b7 ");
  $("summary").hidden = false;
  for (const warning of data.warnings || []) status(warning, "warn");
  if (!(data.warnings || []).length) status(`${plural(state.total, "result")}${data.elapsed_ms !== undefined ? ` in ${Math.round(data.elapsed_ms)} ms` : ""}`);
  const keep = { label: currentLabel() || undefined, run: state.runId || undefined };
  history.replaceState(null, "", pageUrl("/", keep));
  renderMore().then(() => { if (state.rendered) moveFocus(0, { scroll: false }); });
  updateSelectionInfo();
}

// ---- labelling ------------------------------------------------------------------------------

function needLabel() {
  const name = currentLabel();
  if (!name) {
    status("Type a label name first (the current label field, or press /)", "error");
    labelInput.focus();
  }
  return name;
}

function applyLocal(indexes, name, positive) {
  const ids = new Set(indexes.map((i) => state.results[i].frame_id));
  for (let i = 0; i < state.results.length; i += 1) {
    const hit = state.results[i];
    if (!ids.has(hit.frame_id)) continue;
    const others = (hit.labels || []).filter((label) => label.name !== name);
    hit.labels = positive === null ? others : [...others, { name, positive, origin: "manual", score: null }];
    const node = cardAt(i);
    if (node) renderChips(node, hit.labels, currentLabel());
  }
}

async function mark(positive) {
  const name = needLabel();
  const indexes = targets();
  if (!name || !indexes.length) return;
  const frameIds = [...new Set(indexes.map((i) => state.results[i].frame_id))];
  // A grid grown by "more like these" holds the hits of several runs: each label cites its own.
  const byRun = new Map();
  for (const i of indexes) {
    const run = state.results[i].run ?? state.runId ?? null;
    if (!byRun.has(run)) byRun.set(run, new Set());
    byRun.get(run).add(state.results[i].frame_id);
  }
  try {
    const counts = { added: 0, updated: 0, known: true };
    for (const [run, ids] of byRun) {
      const body = { name, frame_ids: [...ids], positive };
      if (run) body.run_id = run;
      const change = await api("/api/labels", { method: "POST", json: body });
      if (change && change.added !== undefined) { counts.added += change.added; counts.updated += change.updated; }
      else counts.known = false;
    }
    applyLocal(indexes, name, positive);
    const detail = counts.known ? ` (${counts.added} new, ${counts.updated} changed)` : "";
    status(`${plural(frameIds.length, "frame")} marked ${positive ? "positive" : "negative"} for \u201c${name}\u201d${detail}`);
    refreshLabels();
    if (state.selected.size) clearSelection();
    else moveFocus(state.focus + 1);
  } catch (err) {
    status(err.message, "error");
  }
}

async function unmark() {
  const name = needLabel();
  const indexes = targets();
  if (!name || !indexes.length) return;
  const carrying = indexes.filter((i) => (state.results[i].labels || []).some((label) => label.name === name));
  if (!carrying.length) {
    status(`none of these frames carries \u201c${name}\u201d`, "warn");
    return;
  }
  const ids = [...new Set(carrying.map((i) => state.results[i].frame_id))];
  const outcomes = await Promise.allSettled(ids.map((id) =>
    api(`/api/labels/${encodeURIComponent(name)}/frames/${id}`, { method: "DELETE" })));
  const done = ids.filter((_, i) => outcomes[i].status === "fulfilled");
  applyLocal(carrying.filter((i) => done.includes(state.results[i].frame_id)), name, null);
  const failed = outcomes.find((outcome) => outcome.status === "rejected");
  if (failed) status(`removed \u201c${name}\u201d from ${done.length} of ${ids.length}: ${failed.reason.message}`, "error");
  else status(`removed \u201c${name}\u201d from ${plural(done.length, "frame")}`);
  refreshLabels();
}

async function refreshLabels() {
  try {
    const labels = listOf(await api("/api/labels"), "labels");
    $("label-options").replaceChildren(...labels.map((label) => {
      const name = label.label ?? label.name;
      const counts = label.positives !== undefined ? `${label.positives}+ / ${label.negatives}\u2212` : "";
      return el("option", { value: name, label: counts ? `${name} (${counts})` : name });
    }));
  } catch { /* the datalist is a convenience; the status line shows real errors */ }
}

// ---- the frame viewer ----------------------------------------------------------------------

function openViewer(index) {
  const hit = state.results[index];
  if (!hit) return;
  $("viewer-image").src = frameImageUrl(hit.frame_id);
  $("viewer-image").alt = `frame ${hit.frame_id}`;
  const labels = (hit.labels || []).map((l) => `${l.positive ? "+" : "\u2212"}${l.name}`).join(", ");
  $("viewer-text").textContent = [`#${hit.rank ?? index + 1}`, `frame ${hit.frame_id}`, `distance ${Number(hit.distance).toFixed(4)}`,
    `${baseName(hit.source_uri)} ${hit.source_kind && hit.source_kind !== "video" ? "" : formatTime(hit.pts_seconds)}`.trim(),
    labels].filter(Boolean).join(" \u00b7 ");
  $("viewer-source").href = sourceLink(hit, { run_id: state.runId, label: currentLabel() });
  $("viewer-search").onclick = () => { $("viewer").close(); searchFrame(hit.frame_id); };
  $("viewer").showModal();
}

// ---- mouse --------------------------------------------------------------------------------------

grid.addEventListener("click", (event) => {
  const node = event.target.closest(".card");
  if (!node) return;
  const index = Number(node.dataset.index);
  const action = event.target.closest("button")?.dataset.action;
  if (event.target.closest("a")) return; // the source link navigates
  if (action === "search") { searchFrame(state.results[index].frame_id); return; }
  if (action === "pos" || action === "neg") {
    if (!state.selected.has(index)) { clearSelection(); }
    moveFocus(index, { scroll: false }).then(() => mark(action === "pos"));
    return;
  }
  if (action === "select" || event.ctrlKey || event.metaKey) {
    select(index, !state.selected.has(index));
    state.anchor = index;
  } else if (event.shiftKey && state.anchor >= 0) {
    selectRange(state.anchor, index);
  } else {
    state.anchor = index;
  }
  updateSelectionInfo();
  moveFocus(index, { scroll: false });
});
grid.addEventListener("dblclick", (event) => {
  const node = event.target.closest(".card");
  if (node && !event.target.closest("button, a")) openViewer(Number(node.dataset.index));
});
// Shift+click must not select the page's text.
grid.addEventListener("mousedown", (event) => { if (event.shiftKey) event.preventDefault(); });

// ---- keyboard ----------------------------------------------------------------------------------

const MOVES = { ArrowLeft: -1, h: -1, ArrowRight: 1, l: 1 };
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (isTyping(event)) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (document.querySelector("dialog[open]")) return; // dialogs keep their own keys
  const key = event.key;
  const index = Math.max(state.focus, 0);
  let handled = true;
  if (key in MOVES) moveFocus(state.focus < 0 ? 0 : index + MOVES[key]);
  else if (key === "ArrowDown" || key === "j") moveFocus(state.focus < 0 ? 0 : index + columns());
  else if (key === "ArrowUp" || key === "k") moveFocus(index - columns());
  else if (key === "Home") moveFocus(0);
  else if (key === "End") moveFocus(state.rendered - 1);
  else if (key === "p") mark(true);
  else if (key === "n") mark(false);
  else if (key === "u") unmark();
  else if (key === "x" || key === " ") {
    if (state.focus >= 0) { select(state.focus, !state.selected.has(state.focus)); state.anchor = state.focus; updateSelectionInfo(); }
  } else if (key === "a") selectAll();
  else if (key === "Escape") clearSelection();
  else if (key === "s") { if (state.results[state.focus]) searchFrame(state.results[state.focus].frame_id); }
  else if (key === "Enter") openViewer(state.focus);
  else if (key === "t") { const hit = state.results[state.focus]; if (hit) location.href = sourceLink(hit, { run_id: state.runId, label: currentLabel() }); }
  else if (key === "d") discover();
  else if (key === "/") labelInput.focus();
  else if (key === "?") $("help").showModal();
  else handled = false;
  if (handled) event.preventDefault();
});

// ---- the form, drop, paste --------------------------------------------------------------------

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (file) searchImage(file);
  else if (state.lastQuery?.frameId) searchFrame(state.lastQuery.frameId);
  else status("Pick or drop an image, or search from a frame of the results", "error");
});
$("file").addEventListener("change", () => { if ($("file").files[0]) searchImage($("file").files[0]); });
document.addEventListener("dragover", (event) => { event.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", (event) => { if (!event.relatedTarget) document.body.classList.remove("dragging"); });
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const file = [...(event.dataTransfer?.files || [])][0];
  if (file) searchImage(file);
});
document.addEventListener("paste", (event) => {
  if (isTyping(event)) return;
  const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) searchImage(file);
});
// Focus moves to the first new card: the button keeps no focus to anchor the scroll on,
// which would follow it down and pull in page after page.
$("load-more").addEventListener("click", async () => {
  const first = state.rendered;
  await renderMore();
  if (state.rendered > first) moveFocus(first);
});
$("mark-positive").addEventListener("click", () => mark(true));
$("mark-negative").addEventListener("click", () => mark(false));
$("unmark").addEventListener("click", () => unmark());
$("discover").addEventListener("click", () => discover());
$("help-button").addEventListener("click", () => $("help").showModal());
labelInput.addEventListener("change", () => {
  const name = currentLabel();
  localStorage.setItem("sisyphus.label", name);
  for (let i = 0; i < state.rendered; i += 1) renderChips(cardAt(i), state.results[i].labels || [], name);
  history.replaceState(null, "", pageUrl("/", { label: name || undefined, run: state.runId || undefined }));
});
labelInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); labelInput.dispatchEvent(new Event("change")); labelInput.blur(); moveFocus(state.focus); }
});

async function loadSources() {
  try {
    const sources = listOf(await api("/api/sources?limit=500"), "sources");
    $("source-filter").append(...sources.map((source) =>
      el("option", { value: String(source.id ?? source.source_id), text: `${source.id ?? source.source_id}: ${baseName(source.uri)}` })));
  } catch { /* leave the filter at "any source" */ }
}

// ---- start ------------------------------------------------------------------------------------

labelInput.value = query.get("label") ?? localStorage.getItem("sisyphus.label") ?? "";
for (const [param, id] of [["k", "k"], ["per_source", "per-source"], ["backend", "backend"]]) {
  if (query.get(param)) $(id).value = query.get(param);
}
refreshLabels();
loadSources();
if (query.get("frame")) searchFrame(query.get("frame"));
else if (query.get("run")) openRun(query.get("run"));
