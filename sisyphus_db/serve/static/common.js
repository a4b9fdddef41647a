// Shared by both pages: the token, API calls, the status line, small formatters.

const params = new URLSearchParams(location.search);
// A server bound beyond loopback needs a token: the page is opened as /?token=..., the
// token goes on every fetch as a Bearer header and on image/video URLs as ?token=.
export const token = params.get("token") || "";

export function withToken(url) {
  if (!token || !url) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

// A page URL that keeps the token and sets or drops the given query parameters.
export function pageUrl(path, query = {}) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") q.set(key, String(value));
  }
  if (token) q.set("token", token);
  const text = q.toString();
  return text ? `${path}?${text}` : path;
}

export class ApiError extends Error {}

// fetch + JSON; errors come back as {"error": "..."} and become one readable line.
export async function api(path, { method = "GET", json, form, signal } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const detail = data && (data.error || data.detail);
    const message = typeof detail === "string" ? detail : (detail ? JSON.stringify(detail) : text.slice(0, 200));
    throw new ApiError(message || `${response.status} ${response.statusText}`);
  }
  return data;
}

// Lists from the API may come bare or wrapped ({"items": [...]}, {"labels": [...]}, ...).
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  if (!data) return [];
  for (const key of [...keys, "items", "results"]) {
    if (Array.isArray(data[key])) return data[key];
  }
  return [];
}

let statusTimer = 0;
// One status line (aria-live): counts after an action, errors in red until the next message.
export function status(message, kind = "info") {
  const el = document.getElementById("status");
  if (!el) return;
  el.textContent = message;
  el.dataset.kind = kind;
  el.classList.add("shown");
  clearTimeout(statusTimer);
  if (kind !== "error") statusTimer = setTimeout(() => el.classList.remove("shown"), 6000);
}

export function formatTime(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  const s = Math.max(0, Number(seconds));
  const minutes = Math.floor(s / 60);
  const rest = s - minutes * 60;
  const hours = Math.floor(minutes / 60);
  const mm = hours ? String(minutes % 60).padStart(2, "0") : String(minutes);
  const ss = rest.toFixed(1).padStart(4, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function baseName(uri) {
  if (!uri) return "";
  const parts = String(uri).replace(/[\\/]+$/, "").split(/[\\/]/);
  return parts[parts.length - 1] || String(uri);
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// Small DOM helper: el("span", {class: "x", text: "hi"}, child, ...).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export function isTyping(event) {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}

export const frameImageUrl = (id) => withToken(`/api/frames/${id}/image`);
export const frameThumbUrl = (id) => withToken(`/api/frames/${id}/thumbnail`);
