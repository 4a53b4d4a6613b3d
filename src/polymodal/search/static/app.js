// polymodal search page: text search, drag-and-drop image search with zero-shot labels.
// Talks only to this server's /api; builds every element with textContent (no HTML from data).
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

function filters() {
  const params = new URLSearchParams();
  if ($("label").value) params.set("label", $("label").value);
  if ($("prefix").value.trim()) params.set("prefix", $("prefix").value.trim());
  return params;
}

function renderHits(title, hits) {
  $("results-title").textContent = title;
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of hits) {
    const fig = document.createElement("figure");
    fig.className = "hit";
    fig.dataset.id = String(hit.id);
    const img = document.createElement("img");
    img.src = hit.thumbnail;
    img.alt = hit.caption || hit.path.split("/").pop();
    img.loading = "lazy";
    const cap = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = hit.caption || hit.path.split("/").pop();
    name.title = hit.path;
    cap.append(score, name);
    if (hit.labels && hit.labels.length) {
      const labels = document.createElement("div");
      labels.className = "name";
      labels.textContent = hit.labels.join(", ");
      cap.append(labels);
    }
    fig.append(img, cap);
    grid.append(fig);
  }
}

function renderLabels(labels) {
  const list = $("labels");
  list.replaceChildren();
  for (const { label, score } of labels.slice(0, 10)) {
    const li = document.createElement("li");
    li.className = "label";
    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(2, Math.round(score * 120))}px`;
    const pct = document.createElement("span");
    pct.className = "label-score";
    pct.textContent = `${(score * 100).toFixed(1)}%`;
    li.append(name, bar, pct);
    list.append(li);
  }
}

async function searchText(event) {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  const params = filters();
  params.set("q", q);
  setStatus("searching…");
  try {
    const body = await api(`/api/search?${params}`);
    renderHits(`Results for “${q}”`, body.hits);
    setStatus(`${body.hits.length} result(s)`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function searchImage(file) {
  if (!file) return;
  const preview = $("upload-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("upload-result").hidden = false;
  $("labels").replaceChildren();
  setStatus("searching by image…");
  const form = () => { const f = new FormData(); f.append("file", file, file.name || "upload"); return f; };
  try {
    const [similar, zeroshot] = await Promise.all([
      api(`/api/search/image?${filters()}`, { method: "POST", body: form() }),
      api("/api/zeroshot", { method: "POST", body: form() }),
    ]);
    renderLabels(zeroshot.labels);
    renderHits(`Similar to ${file.name || "the uploaded image"}`, similar.hits);
    setStatus(`${similar.hits.length} similar item(s)`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function setUpDrop() {
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
  $("file").addEventListener("change", (e) => searchImage(e.target.files[0]));
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
setUpDrop();
loadInfo();
