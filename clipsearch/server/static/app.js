// clipsearch web page: search as you type, search by example, view results.
// Plain JS, no build step, no network beyond this server. Talks to /api/* (see /api/openapi.json).
"use strict";

const PAGE_SIZE = Math.min(200, Math.max(1, Number(new URL(location.href).searchParams.get("k")) || 30));
const MOMENTS_PER_VIDEO = 3; // each is its own result card; the player's timeline shows them all
const DEBOUNCE_MS = 180;
const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children);
  return node;
};

const state = {
  image: null, // File used as an example (dropped, pasted or chosen)
  imageUrl: null, // its object URL, for the chip preview
  like: [], // [{id, name, thumb}] items for "more like this"
  hits: [], // every hit loaded for this query, in the server's order (relevant ones first)
  showAll: false, // the less relevant hits are shown too ("show more")
  expanded: new Set(), // item ids whose folded near-duplicates are unfolded
  tookMs: 0,
  nextOffset: null,
  controller: null, // AbortController of the request in flight
  lastOpener: null, // element to refocus when a dialog closes
  pollTimer: null,
  indexRunning: false, // the last poll saw a job running
};

// ---------------------------------------------------------------- formatting
function fmtTime(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  s = Math.max(0, s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(sec).padStart(2, "0");
}
const fmtScore = (x) => x.toFixed(3);
const fmtBytes = (n) => {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
};
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// ---------------------------------------------------------------- API
async function api(url, init = {}) {
  const res = await fetch(url, { credentials: "same-origin", ...init });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) {
    const msg = body?.error?.message || `${res.status} ${res.statusText}`;
    const err = new Error(msg);
    err.code = body?.error?.code;
    err.status = res.status;
    throw err;
  }
  return body;
}

function showBanner(message) {
  const b = $("banner");
  b.textContent = message || "";
  b.hidden = !message;
}

// ---------------------------------------------------------------- search
function filters() {
  const where = [];
  const folder = $("f-folder").value;
  if (folder) where.push("root:" + folder);
  // the server's default min_score=auto marks where the relevant results end
  const extra = { sort: $("f-sort").value, collapse: String($("f-collapse").checked) };
  if ($("f-after").value) extra.taken_after = $("f-after").value;
  if ($("f-before").value) extra.taken_before = $("f-before").value;
  return { kind: $("f-kind").value, pooling: $("f-pooling").value, rerank: $("f-rerank").checked ? "itm" : "none", where, extra };
}

function hasQuery() {
  return $("q").value.trim() !== "" || state.image !== null || state.like.length > 0;
}

function buildRequest(offset) {
  const q = $("q").value.trim();
  const f = filters();
  if (state.image) {
    const form = new FormData();
    form.append("image", state.image, state.image.name || "pasted-image");
    if (q) form.append("q", q);
    form.append("k", PAGE_SIZE);
    form.append("offset", offset);
    if (f.kind) form.append("kind", f.kind);
    form.append("pooling", f.pooling);
    form.append("moments", MOMENTS_PER_VIDEO);
    form.append("captions", "true");
    if (f.rerank !== "none" && q) form.append("rerank", f.rerank);
    f.where.forEach((w) => form.append("where", w));
    state.like.forEach((l) => form.append("like", l.id));
    Object.entries(f.extra).forEach(([k, v]) => form.append(k, v));
    return ["/api/search", { method: "POST", body: form }];
  }
  const p = new URLSearchParams({ k: PAGE_SIZE, offset, pooling: f.pooling, moments: MOMENTS_PER_VIDEO, captions: "true", ...f.extra });
  if (q) p.set("q", q);
  if (f.rerank !== "none" && q) p.set("rerank", f.rerank);
  if (f.kind) p.set("kind", f.kind);
  f.where.forEach((w) => p.append("where", w));
  state.like.forEach((l) => p.append("like", l.id));
  return ["/api/search?" + p, {}];
}

async function search({ append = false } = {}) {
  state.controller?.abort();
  if (!hasQuery()) {
    state.controller = null;
    state.nextOffset = null;
    renderHits([], false);
    $("summary").textContent = "";
    $("empty").hidden = false;
    return;
  }
  const controller = new AbortController();
  state.controller = controller;
  const offset = append ? state.nextOffset : 0;
  const [url, init] = buildRequest(offset);
  $("results").setAttribute("aria-busy", "true");
  try {
    const res = await api(url, { ...init, signal: controller.signal });
    if (controller !== state.controller) return; // a newer search started meanwhile
    showBanner("");
    state.nextOffset = res.next_offset;
    state.tookMs = res.took_ms;
    renderHits(res.hits, append);
    $("empty").hidden = true;
  } catch (err) {
    if (err.name === "AbortError") return;
    showBanner(err.message);
    $("summary").textContent = "";
  } finally {
    if (controller === state.controller) $("results").removeAttribute("aria-busy");
  }
}

let debounceTimer = null;
function searchSoon() {
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(() => search(), DEBOUNCE_MS);
}

// ---------------------------------------------------------------- results grid
// A video hit gives one card per moment (best first), each with a thumbnail taken at the
// moment's best frame; images give one card.
const momentsOf = (hit) => hit.moments || (hit.moment ? [hit.moment] : []);
const span = (m) => `${fmtTime(m.start)}–${fmtTime(m.end)}`;

function hitLabel(hit, mi) {
  const ms = momentsOf(hit);
  const m = ms[mi];
  const which = ms.length > 1 ? `moment ${mi + 1} of ${ms.length}, ` : "best moment ";
  const moment = m ? `, ${which}${fmtTime(m.start)} to ${fmtTime(m.end)}` : "";
  const text = hit.text_match ? `, ${hit.text_match.source === "caption" ? "caption" : "text in picture"}: ${hit.text_match.text.replace(/\n/g, " ")}` : "";
  const matched = hit.itm_score != null ? `, BLIP match ${Math.round(hit.itm_score * 100)}%` : "";
  const caption = hit.caption && !(hit.text_match && hit.text_match.text === hit.caption) ? `, caption: ${hit.caption}` : "";
  return `${hit.name}, ${hit.kind}, score ${fmtScore(m ? m.score : hit.score)}${matched}${moment}${text}${caption}`;
}

// The text a result matched (read in the picture, or its caption), matched parts in <mark>.
function matchedText(match) {
  const text = match.text.replace(/\n/g, " "); // one character for one: spans stay valid
  const what = match.source === "caption" ? "Caption" : "Text in the picture";
  const out = el("span", { class: "ocr", title: what + (match.t !== null ? ` at ${fmtTime(match.t)}` : "") });
  let at = 0;
  for (const [start, end] of match.spans) {
    out.append(text.slice(at, start), el("mark", { text: text.slice(start, end) }));
    at = end;
  }
  out.append(text.slice(at));
  return out;
}

function card(hit, index, head = null, mi = 0) {
  const m = momentsOf(hit)[mi];
  const img = el("img", {
    src: m ? m.thumb_url : hit.thumb_url,
    alt: hit.kind === "video" ? `${hit.name}, frame at ${fmtTime(m?.best_t ?? 0)}` : hit.name,
    loading: "lazy",
    decoding: "async",
  });
  img.addEventListener("error", () => img.classList.add("broken"), { once: true });
  const badges = el("span", { class: "badges" }, el("span", { class: "score", text: fmtScore(m ? m.score : hit.score) }));
  if (hit.itm_score != null) {
    badges.append(el("span", { class: "itm", text: `BLIP ${Math.round(hit.itm_score * 100)}%`, title: "BLIP image-text match probability" }));
  }
  if (hit.kind === "video") {
    badges.append(el("span", { class: "video", text: "▶ " + (m ? span(m) : fmtTime(hit.duration)) }));
  }
  const open = el(
    "button",
    {
      type: "button",
      class: "card",
      "data-index": index,
      "aria-label": hitLabel(hit, mi),
      onclick: (e) => openViewer(hit, e.currentTarget, mi),
    },
    img,
    badges,
    el("span", { class: "name", text: hit.name, title: hit.path }),
  );
  if (hit.text_match) open.append(matchedText(hit.text_match));
  if (hit.caption && !(hit.text_match && hit.text_match.text === hit.caption)) {
    open.append(el("span", { class: "caption", text: hit.caption, title: hit.caption }));
  }
  const like = el("button", {
    type: "button",
    class: "like",
    text: "More like this",
    "aria-label": `More like ${hit.name}`,
    onclick: () => moreLikeThis(hit),
  });
  const kind = head ? "member" : hit.relevant === false ? "weak" : null;
  const li = el("li", { class: kind, "data-item": hit.item_id }, open, like);
  if (head) open.setAttribute("aria-label", `${hitLabel(hit, mi)}, near-duplicate of ${head.name}`);
  if (hit.members?.length && mi === 0) {
    const unfolded = state.expanded.has(hit.item_id);
    li.append(el("button", {
      type: "button",
      class: "dups",
      "aria-expanded": String(unfolded),
      "aria-label": `${plural(hit.members.length, "near-duplicate")} of ${hit.name}`,
      text: "+" + hit.members.length,
      onclick: () => toggleMembers(hit),
    }));
  }
  return li;
}

function toggleMembers(hit) {
  if (state.expanded.has(hit.item_id)) state.expanded.delete(hit.item_id);
  else state.expanded.add(hit.item_id);
  renderGrid();
  $("grid").querySelector(`li[data-item="${hit.item_id}"]:not(.member) .dups`)?.focus();
}

// Month headings: the wall-clock month where the picture was taken (the ISO string's own).
function monthKey(taken) {
  return taken ? taken.slice(0, 7) : "";
}
function monthLabel(key) {
  if (!key) return "Date unknown";
  const [y, m] = key.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, 15)).toLocaleDateString(undefined, { year: "numeric", month: "long", timeZone: "UTC" });
}
const heading = (text, weak = false) => el("li", { class: weak ? "heading weak" : "heading" }, el("h2", { text }));

function renderHits(hits, append) {
  if (!append) {
    state.hits = [];
    state.showAll = false;
    state.expanded.clear();
  }
  state.hits.push(...hits);
  renderGrid();
}

// The grid: the relevant hits (by month when sorted by date), then, once asked for, the
// less relevant ones; a result's near-duplicates follow it when unfolded.
function renderGrid() {
  const byMonth = $("f-sort").value !== "relevance" && $("f-group").checked;
  const relevant = state.hits.filter((h) => h.relevant !== false).length;
  const hidden = state.showAll ? 0 : state.hits.length - relevant;
  const items = [];
  let month = null;
  let weakStarted = false;
  let index = 0; // cards are numbered in grid order
  // A video's cards: one per moment, best first (at least one); an image's: one.
  const momentCards = (hit, head = null) => {
    const n = hit.kind === "video" ? Math.max(1, momentsOf(hit).length) : 1;
    return Array.from({ length: n }, (_, mi) => card(hit, index++, head, mi));
  };
  state.hits.forEach((hit) => {
    if (hit.relevant === false) {
      if (!state.showAll) return;
      if (!weakStarted && relevant) items.push(heading("Less relevant", true));
      weakStarted = true;
    } else if (byMonth && monthKey(hit.taken) !== month) {
      month = monthKey(hit.taken);
      items.push(heading(monthLabel(month)));
    }
    items.push(...momentCards(hit));
    if (state.expanded.has(hit.item_id)) (hit.members || []).forEach((m) => items.push(...momentCards(m, hit)));
  });
  $("grid").replaceChildren(...items);
  $("show-more").hidden = hidden === 0;
  $("show-more").textContent = `Show ${plural(hidden, "less relevant result")}`;
  $("more").hidden = state.nextOffset === null || hidden > 0;
  const more = state.nextOffset !== null ? " so far" : "";
  const shown = state.showAll ? state.hits.length : relevant;
  let text = "No results. Try other words or fewer filters.";
  if (shown) text = `${plural(shown, "result")}${more} · ${Math.round(state.tookMs)} ms`;
  else if (hidden) text = `No close matches: ${plural(hidden, "less relevant result")} below.`;
  $("summary").textContent = state.hits.length || state.controller ? text : "";
}

function cards() {
  return [...$("grid").querySelectorAll(".card")];
}

function columns(list) {
  if (list.length < 2) return 1;
  const top = list[0].getBoundingClientRect().top;
  const n = list.findIndex((c) => c.getBoundingClientRect().top > top + 1);
  return n === -1 ? list.length : n;
}

$("grid").addEventListener("keydown", (e) => {
  const list = cards();
  const i = list.indexOf(document.activeElement);
  if (i === -1) return;
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(list), ArrowUp: -columns(list) }[e.key];
  if (step === undefined) return;
  e.preventDefault();
  const j = Math.min(list.length - 1, Math.max(0, i + step));
  list[j].focus();
  list[j].scrollIntoView({ block: "nearest" });
});

$("more").addEventListener("click", () => search({ append: true }));
$("show-more").addEventListener("click", () => {
  state.showAll = true;
  renderGrid();
  $("grid").querySelector("li.weak .card")?.focus(); // the first less relevant result
});

// ---------------------------------------------------------------- query chips
function renderChips() {
  const chips = $("chips");
  chips.replaceChildren();
  if (state.image) {
    chips.append(chip(state.imageUrl, state.image.name || "pasted image", () => setImage(null)));
  }
  state.like.forEach((l) =>
    chips.append(chip(l.thumb, "like " + l.name, () => {
      state.like = state.like.filter((x) => x.id !== l.id);
      renderChips();
      search();
    })),
  );
}

function chip(src, label, onRemove) {
  return el(
    "span",
    { class: "chip" },
    el("img", { src, alt: "" }),
    el("span", { class: "chip-label", text: label }),
    el("button", { type: "button", class: "chip-x", "aria-label": "Remove " + label, text: "×", onclick: onRemove }),
  );
}

function setImage(file) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = file;
  state.imageUrl = file ? URL.createObjectURL(file) : null;
  renderChips();
  search();
}

function moreLikeThis(hit) {
  closeDialogs();
  state.like = [{ id: hit.item_id, name: hit.name, thumb: hit.thumb_url }];
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = null;
  state.imageUrl = null;
  $("q").value = "";
  renderChips();
  search();
  $("q").focus();
}

$("image-input").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (file) setImage(file);
});

document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    e.preventDefault();
    setImage(file);
  }
});

let dragDepth = 0;
const isFileDrag = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
window.addEventListener("dragenter", (e) => {
  if (!isFileDrag(e)) return;
  dragDepth++;
  $("drop").hidden = false;
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("drop").hidden = true;
});
window.addEventListener("dragover", (e) => {
  if (isFileDrag(e)) e.preventDefault();
});
window.addEventListener("drop", (e) => {
  if (!isFileDrag(e)) return;
  e.preventDefault();
  dragDepth = 0;
  $("drop").hidden = true;
  const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/"));
  if (file) setImage(file);
  else showBanner("Drop an image file (JPEG, PNG, WebP…) to search by example.");
});

// ---------------------------------------------------------------- viewer
function openViewer(hit, opener, mi = 0) {
  state.lastOpener = opener;
  const body = $("viewer-body");
  body.replaceChildren();
  $("viewer-title").textContent = hit.name;
  const dims = hit.width ? ` · ${hit.width}×${hit.height}` : "";
  const taken = hit.taken ? ` · taken ${hit.taken.slice(0, 16).replace("T", " ")}` : "";
  $("viewer-meta").textContent = `${hit.path} · score ${fmtScore(hit.score)}${dims}${taken}`;
  if (hit.text_match) $("viewer-meta").append(" · text: ", matchedText(hit.text_match));
  $("viewer-open").href = hit.media_url;
  $("viewer-like").onclick = () => moreLikeThis(hit);
  $("timeline").hidden = hit.kind !== "video";
  if (hit.kind === "video") {
    const m = momentsOf(hit)[mi];
    const video = el("video", { controls: true, muted: true, playsinline: true, preload: "auto", poster: m ? m.thumb_url : hit.thumb_url });
    video.muted = true;
    body.append(video);
    setupTimeline(video, hit, mi);
    video.src = hit.media_url;
  } else {
    body.append(el("img", { src: hit.media_url, alt: hit.name }));
  }
  $("viewer").showModal();
}

// The timeline shows every moment of the video; the one being watched is highlighted.
// Clicking a moment (on the track or in the list under it) seeks to its start.
function setupTimeline(video, hit, mi) {
  const ms = momentsOf(hit);
  const track = $("track"), head = $("playhead"), list = $("moment-list");
  let active = mi;
  const duration = () => (video.duration && isFinite(video.duration) ? video.duration : hit.duration || 0);
  const seek = (i) => {
    active = i;
    video.currentTime = ms[i].start;
    mark();
  };
  track.querySelectorAll(".moment").forEach((n) => n.remove());
  const spans = ms.map((m, i) =>
    el("span", {
      class: "moment",
      "data-moment": i,
      title: `Moment ${i + 1}: ${span(m)}`,
      onclick: (e) => {
        e.stopPropagation(); // a moment seeks to its start, not to the click position
        seek(i);
      },
    }),
  );
  track.prepend(...spans);
  const buttons = ms.map((m, i) =>
    el("button", { type: "button", class: "moment-jump", "data-moment": i, onclick: () => seek(i) }, `${i + 1}. ${span(m)}`),
  );
  list.replaceChildren(...buttons);
  list.hidden = ms.length < 2;
  const mark = () => {
    spans.forEach((n, i) => n.classList.toggle("active", i === active));
    buttons.forEach((b, i) => b.setAttribute("aria-pressed", String(i === active)));
    const m = ms[active];
    $("moment-text").textContent = m
      ? (ms.length > 1 ? `Moment ${active + 1} of ${ms.length}: ${span(m)}` : `Best match ${span(m)}`) +
        " (highlighted)"
      : "";
  };
  const place = () => {
    const d = duration();
    if (!d) return;
    const inside = ms.findIndex((m) => m.start <= video.currentTime && video.currentTime < m.end);
    if (inside !== -1 && inside !== active) {
      active = inside; // playing (or scrubbed) into another moment: it becomes the highlighted one
      mark();
    }
    track.setAttribute("aria-valuemax", Math.round(d));
    ms.forEach((m, i) => {
      spans[i].style.setProperty("left", (100 * m.start) / d + "%");
      spans[i].style.setProperty("width", Math.max(0.5, (100 * (m.end - m.start)) / d) + "%");
    });
    head.style.setProperty("left", (100 * video.currentTime) / d + "%");
    track.setAttribute("aria-valuenow", Math.round(video.currentTime));
    track.setAttribute("aria-valuetext", fmtTime(video.currentTime));
  };
  mark();
  video.addEventListener("loadedmetadata", () => {
    if (ms[active]) video.currentTime = ms[active].start;
    place();
    video.play().catch(() => {}); // autoplay may be refused; the controls remain
  }, { once: true });
  video.addEventListener("timeupdate", place);
  track.onclick = (e) => {
    const r = track.getBoundingClientRect();
    video.currentTime = ((e.clientX - r.left) / r.width) * duration();
  };
  track.onkeydown = (e) => {
    const step = { ArrowRight: 5, ArrowLeft: -5, Home: -Infinity, End: Infinity }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    video.currentTime = Math.min(video.duration || 0, Math.max(0, video.currentTime + step));
  };
  place();
}

function closeDialogs() {
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
}

for (const dialog of document.querySelectorAll("dialog")) {
  dialog.addEventListener("close", () => {
    const video = dialog.querySelector("video");
    if (video) {
      video.pause();
      video.removeAttribute("src");
      video.load(); // stops the download
    }
    if (dialog.id === "status") stopPolling();
    state.lastOpener?.focus();
  });
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog || e.target.closest("[data-close]")) dialog.close();
  });
}

// ---------------------------------------------------------------- status and indexing
async function loadStatus() {
  try {
    const st = await api("/api/status");
    renderStatus(st);
    fillFolders(st.roots || []);
    showBanner(st.model_error ? "The model could not be loaded: " + st.model_error : "");
    if (st.indexing) pollIndex();
    return st;
  } catch (err) {
    showBanner(err.message);
  }
}

function renderStatus(st) {
  const items = st.items || {};
  const kinds = items.by_kind || {};
  const count = (k) => kinds[k]?.ok ?? 0;
  const rows = [
    ["Library", st.library],
    ["Model", (st.model || "none yet") + (st.model_loaded ? "" : st.model_loading ? " (loading…)" : " (not loaded)")],
    ["Items", `${(items.ok ?? 0).toLocaleString()} (${plural(count("image"), "image")}, ${plural(count("video"), "video")})`],
    ["Failed", (items.failed ?? 0).toLocaleString()],
    ["Folders", (st.roots || []).join("\n") || "none yet"],
  ];
  if (st.vectors !== undefined) rows.push(["Vectors", `${st.vectors.toLocaleString()} (${(st.frames ?? 0).toLocaleString()} video frames)`]);
  if (st.db_bytes !== undefined) rows.push(["Catalog size", fmtBytes(st.db_bytes)]);
  $("status-list").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  const fails = st.failures || [];
  $("failures").replaceChildren(
    ...(fails.length ? fails.map((f) => el("li", {}, el("code", { text: f.path }), " — " + f.error)) : [el("li", { text: "None." })]),
  );
  $("index-root").disabled = !st.can_index_new_folders;
  $("index-root").placeholder = st.can_index_new_folders ? "/home/you/Pictures" : "re-index the known folders";
}

function fillFolders(roots) {
  const sel = $("f-folder");
  const current = sel.value;
  sel.replaceChildren(el("option", { value: "", text: "All folders" }), ...roots.map((r) => el("option", { value: r, text: r })));
  sel.value = roots.includes(current) ? current : "";
}

function renderIndex(p) {
  const box = $("index-progress");
  box.hidden = p.state === "idle";
  const running = p.state === "running" || p.state === "stopping";
  $("index-start").disabled = running;
  $("index-stop").hidden = !running;
  const bar = $("index-bar");
  if (p.to_encode) {
    bar.max = p.to_encode;
    bar.value = p.done;
  } else if (running) {
    bar.removeAttribute("value"); // indeterminate while scanning
  } else {
    bar.max = 1;
    bar.value = 1;
  }
  const parts = [];
  if (p.phase === "scanning") parts.push(`Scanning: ${plural(p.found, "file")} found`);
  else if (p.phase === "dating" && running) parts.push("Reading the capture dates of earlier files");
  else if (running) parts.push(`Encoding ${p.done} / ${p.to_encode ?? "?"} new or changed files`);
  else if (p.state === "done") parts.push(`Done: ${p.report?.added ?? p.done} encoded, ${p.report?.unchanged ?? 0} unchanged, ${p.report?.deleted ?? 0} removed`);
  else if (p.state === "stopped") parts.push(`Stopped after ${p.done} files; index again to resume`);
  else if (p.state === "failed") parts.push(`Failed: ${p.message}`);
  if (p.failed) parts.push(plural(p.failed, "failure"));
  if (p.files_per_s) parts.push(`${p.files_per_s} files/s`);
  if (p.elapsed_s >= 0.1) parts.push(`${p.elapsed_s.toFixed(1)} s`);
  $("index-text").textContent = parts.join(" · ");
  $("index-errors").replaceChildren(...(p.errors || []).slice(-10).map((e) => el("li", {}, el("code", { text: e.path }), " — " + e.error)));
}

async function pollIndex() {
  stopPolling();
  try {
    const p = await api("/api/index");
    renderIndex(p);
    const running = p.state === "running" || p.state === "stopping";
    if (running) {
      state.pollTimer = setTimeout(pollIndex, POLL_MS);
    } else if (state.indexRunning) {
      loadStatus(); // a job just finished: new items, new folders
      if (hasQuery()) search();
    }
    state.indexRunning = running;
  } catch (err) {
    $("index-text").textContent = err.message;
  }
}

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

$("index-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const root = $("index-root").value.trim();
  try {
    const p = await api("/api/index", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(root ? { roots: [root] } : {}),
    });
    state.indexRunning = true;
    renderIndex(p);
    pollIndex();
  } catch (err) {
    $("index-progress").hidden = false;
    $("index-text").textContent = err.message;
  }
});

$("index-stop").addEventListener("click", async () => {
  renderIndex(await api("/api/index", { method: "DELETE" }));
});

$("status-toggle").addEventListener("click", (e) => {
  state.lastOpener = e.currentTarget;
  $("status").showModal();
  loadStatus();
  pollIndex();
});

// ---------------------------------------------------------------- filters, keys, start
$("filters-toggle").addEventListener("click", (e) => {
  const open = $("filters").hidden;
  $("filters").hidden = !open;
  e.currentTarget.setAttribute("aria-expanded", String(open));
});
for (const id of ["f-kind", "f-folder", "f-after", "f-before", "f-pooling", "f-sort", "f-collapse", "f-rerank"]) {
  $(id).addEventListener("change", () => search());
}
$("f-group").addEventListener("change", () => renderGrid());
$("f-clear").addEventListener("click", () => {
  for (const id of ["f-kind", "f-folder", "f-after", "f-before"]) $(id).value = "";
  $("f-pooling").value = "mean";
  $("f-sort").value = "relevance";
  $("f-collapse").checked = true;
  $("f-group").checked = true;
  $("f-rerank").checked = false;
  search();
});

$("q").addEventListener("input", searchSoon);
$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  clearTimeout(debounceTimer);
  search();
});

document.addEventListener("keydown", (e) => {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName) || document.activeElement?.isContentEditable;
  if (e.key === "/" && !typing && !document.querySelector("dialog[open]")) {
    e.preventDefault();
    $("q").focus();
    $("q").select();
  } else if (e.key === "ArrowDown" && document.activeElement === $("q") && cards().length) {
    e.preventDefault();
    cards()[0].focus();
  }
});

(function start() {
  // A token in the URL has set the session cookie; keep it out of the address bar and history.
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  loadStatus();
  const q = url.searchParams.get("q");
  if (q) {
    $("q").value = q;
    search();
  }
})();
