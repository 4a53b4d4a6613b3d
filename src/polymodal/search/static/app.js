// polymodal search page: text search, image search (drop, or a keyboard-reachable file picker) with
// zero-shot labels. Talks only to this server's /api; builds every element with textContent (no HTML from data).
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `HTTP ${response.status}`);
  }
  return body;
}

// One search owns the results at a time: starting a new one (text or image) aborts the requests of the
// previous one, and an answer that arrives for a search that is no longer the latest is dropped, so a
// slow query can never overwrite a newer query's results.
let current = { id: 0, controller: new AbortController() };

function startSearch() {
  current.controller.abort();
  current = { id: current.id + 1, controller: new AbortController() };
  return current;
}

const isLatest = (search) => search.id === current.id;
const aborted = (err) => err && err.name === "AbortError";

function filters() {
  const params = new URLSearchParams();
  if ($("label").value) params.set("label", $("label").value);
  if ($("prefix").value.trim()) params.set("prefix", $("prefix").value.trim());
  return params;
}

function thumbnail(hit, name) {
  // A fixed-size box shows a placeholder until the image has loaded, and instead of it if it fails.
  const box = document.createElement("div");
  box.className = "thumb loading";
  const img = document.createElement("img");
  img.alt = name;
  img.width = 128;
  img.height = 128;
  img.loading = "lazy";
  img.addEventListener("load", () => box.classList.remove("loading"));
  img.addEventListener("error", () => {
    box.classList.remove("loading");
    box.classList.add("missing");
    img.remove();
    const note = document.createElement("span");
    note.className = "placeholder";
    note.textContent = "no preview";
    box.append(note);
  });
  img.src = hit.thumbnail;
  box.append(img);
  return box;
}

function renderHits(title, hits) {
  $("results-title").textContent = title;
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of hits) {
    const fig = document.createElement("figure");
    fig.className = "hit";
    fig.dataset.id = String(hit.id);
    const shown = hit.caption || hit.path.split("/").pop();
    const cap = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = shown;
    name.title = hit.path;
    cap.append(score, name);
    if (hit.labels && hit.labels.length) {
      const labels = document.createElement("div");
      labels.className = "name";
      labels.textContent = hit.labels.join(", ");
      cap.append(labels);
    }
    fig.append(thumbnail(hit, shown), cap);
    grid.append(fig);
  }
}

function renderLabels(labels) {
  const list = $("labels");
  list.replaceChildren();
  for (const { label, score } of labels) {
    const li = document.createElement("li");
    li.className = "label";
    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label;
    name.title = label;
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(2, Math.round(score * 100))}%`;
    track.append(bar);
    const pct = document.createElement("span");
    pct.className = "label-score";
    pct.textContent = `${(score * 100).toFixed(1)}%`;
    li.append(name, track, pct);
    list.append(li);
  }
}

async function searchText(event) {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  const search = startSearch();
  const params = filters();
  params.set("q", q);
  setStatus("searching…");
  try {
    const body = await api(`/api/search?${params}`, { signal: search.controller.signal });
    if (!isLatest(search)) return;
    renderHits(`Results for “${q}”`, body.hits);
    setStatus(`${body.hits.length} result(s)`);
  } catch (err) {
    if (isLatest(search) && !aborted(err)) setStatus(err.message, true);
  }
}

async function zeroshot(file, search) {
  // Independent of the similar-items request: labels that fail (or are still being prepared on an index
  // with many labels) leave a note here, and the similar items are shown all the same.
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  const note = $("labels-status");
  note.textContent = "labelling…";
  try {
    const body = await api("/api/zeroshot?top=10", { method: "POST", body: form, signal: search.controller.signal });
    if (!isLatest(search)) return;
    renderLabels(body.labels);
    note.textContent = body.count > body.labels.length ? `best ${body.labels.length} of ${body.count} labels` : "";
  } catch (err) {
    if (isLatest(search) && !aborted(err)) note.textContent = `No labels: ${err.message}`;
  }
}

async function searchImage(file) {
  if (!file) return;
  const search = startSearch();
  const preview = $("upload-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `the uploaded image ${file.name || ""}`.trim();
  $("upload-result").hidden = false;
  $("labels").replaceChildren();
  setStatus("searching by image…");
  const labelled = zeroshot(file, search);
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  try {
    const similar = await api(`/api/search/image?${filters()}`, { method: "POST", body: form,
                                                                  signal: search.controller.signal });
    if (!isLatest(search)) return;
    renderHits(`Similar to ${file.name || "the uploaded image"}`, similar.hits);
    setStatus(`${similar.hits.length} similar item(s)`);
  } catch (err) {
    if (isLatest(search) && !aborted(err)) setStatus(err.message, true);
  }
  await labelled;
}

function setUpUpload() {
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    searchImage(file);
  });
  // A file dropped anywhere else must not make the browser navigate away to it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  // The button is the keyboard's (and screen reader's) way in: it opens the hidden file input's picker.
  $("choose").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (e) => {
    searchImage(e.target.files[0]);
    e.target.value = "";  // choosing the same file again is a new search
  });
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    const recall = info.ann.kind === "flat" ? "exact" : `${info.ann.kind}, recall@10 ${info.ann.recall_at_10.toFixed(3)}`;
    $("info").textContent = `${info.count} items · model ${info.model_id} · ${recall}`;
    const select = $("label");
    for (const label of info.labels) {
      const opt = document.createElement("option");
      opt.value = label;
      opt.textContent = label;
      select.append(opt);
    }
  } catch (err) {
    setStatus(err.message, true);
  }
}

$("search-form").addEventListener("submit", searchText);
setUpUpload();
loadInfo();
