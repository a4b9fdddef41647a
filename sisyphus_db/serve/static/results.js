// The result set of the review page: its pages of cards, the focus and the selection.

import { ApiError, status } from "./common.js";
import { card, setSelected } from "./cards.js";

export const PAGE = 60; // cards added to the DOM at a time: a run of thousands never lands at once
const $ = (id) => document.getElementById(id);
export const grid = $("grid");
export const currentLabel = () => $("label").value.trim();

export const state = {
  results: [],        // every hit fetched so far, in rank order
  total: 0,           // hits in the run (more than results.length while pages stay on the server)
  fetchPage: null,    // async (offset, limit) => hits, for runs paged by the server
  rendered: 0,
  runId: null,
  focus: -1,
  anchor: -1,
  selected: new Set(),
  controller: null,
  lastQuery: null,    // how to repeat the search (kind + payload), for the summary
};

// A new result set: the grid empties and its first page is rendered by the caller.
export function resetResults(hits, { total, fetchPage, runId }) {
  state.results = hits;
  state.total = Math.max(total ?? hits.length, hits.length);
  state.fetchPage = fetchPage || null;
  state.rendered = 0;
  state.runId = runId ?? null;
  state.focus = -1;
  state.anchor = -1;
  state.selected.clear();
  generation += 1;
  rendering = null;
  grid.replaceChildren();
}

// More results below the shown ones ("more like these"): the shown cards, their focus and
// selection stay; what was fetched but never shown is dropped, so the new hits come right
// after the last card seen. Each hit remembers the run it came from (labels cite it); the
// caller renders and focuses the first new card. Returns its index.
export function appendResults(hits, { runId }) {
  for (const hit of state.results) hit.run ??= state.runId;
  state.results.length = state.rendered;
  const first = state.results.length;
  state.results.push(...hits.map((hit, i) => ({ ...hit, rank: first + i + 1, run_rank: hit.rank, run: runId ?? null })));
  state.total = state.results.length;
  state.fetchPage = null;
  state.runId = runId ?? null;
  generation += 1; // a page of the old run still being fetched is not added
  rendering = null;
  return first;
}

// ---- pages of cards ------------------------------------------------------------------------

// One page render at a time; a new result set (generation) drops a render still waiting for the old one.
let rendering = null;
let generation = 0;
export function renderMore() {
  if (!rendering) {
    const promise = renderPage(generation).finally(() => {
      if (rendering === promise) rendering = null;
      updateMore();
    });
    rendering = promise;
  }
  return rendering;
}

async function renderPage(gen) {
  try {
    const want = state.rendered + PAGE;
    if (state.fetchPage && state.results.length < Math.min(want, state.total)) {
      const more = await state.fetchPage(state.results.length, Math.max(PAGE * 2, want - state.results.length));
      if (gen !== generation) return;
      state.results.push(...more);
      if (!more.length) state.total = state.results.length;
    }
    const end = Math.min(want, state.results.length);
    const fragment = document.createDocumentFragment();
    const ctx = { current: currentLabel(), runId: state.runId };
    for (let i = state.rendered; i < end; i += 1) fragment.append(card(state.results[i], i, ctx));
    grid.append(fragment);
    state.rendered = end;
  } catch (err) {
    if (gen === generation) status(err instanceof ApiError ? err.message : String(err), "error");
  }
}

function updateMore() {
  const left = state.total - state.rendered;
  $("more").hidden = left <= 0;
  $("more-info").textContent = `showing ${state.rendered} of ${state.total}`;
  watchSentinel();
}

// Infinite scroll: the next page is added when the end of the grid comes near the viewport.
// An observer reports changes only: after each page it observes again, so a sentinel still
// in range (cards shorter than the screen) brings the next page too.
const sentinelObserver = new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting) && state.rendered < state.total && !rendering) renderMore();
}, { rootMargin: "400px" });
sentinelObserver.observe($("sentinel"));
function watchSentinel() {
  sentinelObserver.unobserve($("sentinel"));
  sentinelObserver.observe($("sentinel"));
}

// ---- focus and selection ----------------------------------------------------------------

export const cardAt = (index) => grid.children[index] || null;

export async function moveFocus(index, { scroll = true } = {}) {
  if (!state.total) return;
  index = Math.max(0, Math.min(index, state.total - 1));
  while (index >= state.rendered && state.rendered < state.total) {
    const before = state.rendered;
    await renderMore();
    if (state.rendered === before) break;
  }
  index = Math.min(index, state.rendered - 1);
  const previous = cardAt(state.focus);
  if (previous) previous.tabIndex = -1;
  const node = cardAt(index);
  if (!node) return;
  state.focus = index;
  node.tabIndex = 0; // roving tabindex: Tab enters the grid at the focused card
  if (scroll) node.focus({ preventScroll: false });
  else node.focus({ preventScroll: true });
  if (scroll) node.scrollIntoView({ block: "nearest" });
}

export function columns() {
  const template = getComputedStyle(grid).gridTemplateColumns;
  return Math.max(1, template.split(" ").filter(Boolean).length);
}

export function select(index, on) {
  const node = cardAt(index);
  if (!node) return;
  if (on) state.selected.add(index); else state.selected.delete(index);
  setSelected(node, on);
}

export function selectRange(from, to) {
  const [a, b] = from <= to ? [from, to] : [to, from];
  for (let i = a; i <= b; i += 1) select(i, true);
}

export function selectAll() {
  const all = state.selected.size === state.rendered;
  for (let i = 0; i < state.rendered; i += 1) select(i, !all);
  updateSelectionInfo();
}

export function clearSelection() {
  for (const i of [...state.selected]) select(i, false);
  updateSelectionInfo();
}

export function updateSelectionInfo() {
  const n = state.selected.size;
  $("selection-info").textContent = n ? `${n} selected` : "";
}

export function targets() {
  const indexes = state.selected.size ? [...state.selected].sort((a, b) => a - b) : (state.focus >= 0 ? [state.focus] : []);
  return indexes.filter((i) => state.results[i]);
}

