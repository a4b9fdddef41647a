// Result cards: thumbnail, distance (always visible), source and time, label chips, actions.

import { baseName, el, formatTime, frameThumbUrl, pageUrl, withToken } from "./common.js";

export function sourceLink(hit, extra = {}) {
  return pageUrl(`/sources/${hit.source_id}`, { frame: hit.frame_id, t: hit.pts_seconds, ...extra });
}

function chip(label, current) {
  const kind = label.positive ? "pos" : "neg";
  const origin = label.origin && label.origin !== "manual" ? ` ${label.origin}` : "";
  const cls = `chip ${kind}${origin ? " weak" : ""}${label.name === current ? " current" : ""}`;
  const sign = label.positive ? "+" : "\u2212";
  return el("li", { class: cls, title: `${label.positive ? "positive" : "negative"}${origin}: ${label.name}` },
    el("span", { "aria-hidden": "true", text: sign }),
    el("span", { class: "visually-hidden", text: label.positive ? "positive " : "negative " }),
    label.name);
}

export function renderChips(card, labels, current) {
  const list = card.querySelector(".chips");
  const sorted = [...labels].sort((a, b) => (b.name === current) - (a.name === current) || a.name.localeCompare(b.name));
  list.replaceChildren(...sorted.map((label) => chip(label, current)));
  const mine = labels.find((label) => label.name === current);
  card.dataset.mark = mine ? (mine.positive ? "pos" : "neg") : "";
}

export function card(hit, index, { current, runId }) {
  const distance = typeof hit.distance === "number" ? hit.distance.toFixed(3) : "";
  // A time means something in a video; an image's frame is shown by its source alone.
  const time = hit.source_kind && hit.source_kind !== "video" ? "" : formatTime(hit.pts_seconds);
  const where = `${baseName(hit.source_uri)} ${time}`.trim();
  const thumb = hit.thumbnail_url ? withToken(hit.thumbnail_url) : frameThumbUrl(hit.frame_id);
  const w = hit.width || 4, h = hit.height || 3;
  const node = el("li", {
    class: "card", tabindex: "-1", "aria-label": `result ${hit.rank ?? index + 1}, frame ${hit.frame_id}, distance ${distance}, ${where}`,
    dataset: { index: String(index), frameId: String(hit.frame_id) },
  },
  el("div", { class: "thumb" },
    // width/height keep the layout still while lazy thumbnails arrive.
    el("img", { src: thumb, loading: "lazy", decoding: "async", alt: "", width: String(w), height: String(h), draggable: "false" }),
    el("span", { class: "rank", text: `#${hit.rank ?? index + 1}` }),
    el("span", { class: "distance", title: "cosine distance (lower is closer)", text: distance }),
    hit.score !== undefined && hit.score !== null
      ? el("span", { class: "score", title: "discover score", text: `score ${Number(hit.score).toFixed(2)}` }) : null,
    el("span", { class: "tick", "aria-hidden": "true", text: "\u2713" })),
  el("div", { class: "meta" },
    el("a", { class: "src", href: sourceLink(hit, { run_id: runId, label: current }), title: hit.source_uri || "",
              tabindex: "-1", text: baseName(hit.source_uri) || `source ${hit.source_id}` }),
    el("span", { class: "time", text: time })),
  el("ul", { class: "chips", "aria-label": "labels" }),
  el("div", { class: "actions" },
    el("button", { type: "button", class: "act-search", tabindex: "-1", "data-action": "search", title: "search from this frame (s)" },
      "Search", el("span", { class: "visually-hidden", text: " from this frame" })),
    el("button", { type: "button", class: "act-pos pos", tabindex: "-1", "data-action": "pos", title: "positive (p)", "aria-label": "mark positive", text: "+" }),
    el("button", { type: "button", class: "act-neg neg", tabindex: "-1", "data-action": "neg", title: "negative (n)", "aria-label": "mark negative", text: "\u2212" }),
    el("button", { type: "button", class: "act-select", tabindex: "-1", "data-action": "select", "aria-pressed": "false", title: "select (x)", "aria-label": "select", text: "\u2610" })));
  renderChips(node, hit.labels || [], current);
  return node;
}

export function setSelected(node, selected) {
  node.classList.toggle("selected", selected);
  const button = node.querySelector(".act-select");
  button.setAttribute("aria-pressed", String(selected));
  button.textContent = selected ? "\u2611" : "\u2610";
}
