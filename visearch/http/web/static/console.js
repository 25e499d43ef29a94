// visearch console: plain JavaScript over the /v1 HTTP API (the same API scripts use).
// Sections: API and auth · images · datasets and models · tabs · query (drop, paste, box,
// #concepts) · search and results (chart, band, grid, keyboard) · detail view · collections ·
// find · start. A new mode is one more tab: Console.registerTab(id, {show() {...}}).
"use strict";

const Console = (() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };
  const svgEl = (tag, attrs = {}) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const score = (s) => Number(s).toFixed(4);

  // ---- API and auth ------------------------------------------------------------------------
  const KEY_STORE = "visearch.apiKey";
  let apiKey = sessionStorage.getItem(KEY_STORE) || "";
  let keyWaiters = [];

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.detail) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  function askKey(message) {
    const dialog = $("#key-dialog");
    $("#key-error").textContent = message || "";
    $("#key-button").hidden = false;
    if (!dialog.open) dialog.showModal();
    $("#key-input").focus();
    return new Promise((resolve) => keyWaiters.push(resolve));
  }

  async function api(path, { method = "GET", json, form, raw = false } = {}) {
    for (let attempt = 0; ; attempt++) {
      const headers = {};
      if (apiKey) headers["X-API-Key"] = apiKey;
      let body;
      if (json !== undefined) {
        headers["content-type"] = "application/json";
        body = JSON.stringify(json);
      } else if (form) body = form;
      const r = await fetch(path, { method, headers, body });
      if (r.status === 401 && attempt < 3) {
        await askKey(apiKey ? "That key was refused." : "");
        continue;
      }
      if (!r.ok) {
        let detail;
        try { detail = await r.json(); } catch { detail = { detail: `${r.status} ${r.statusText}` }; }
        throw new ApiError(r.status, detail);
      }
      if (raw) return r;
      return r.status === 204 ? null : r.json();
    }
  }

  // ---- images: plain URLs without a key; with a key, fetched with the header into blob URLs --
  const blobUrls = new Map(); // url -> blob URL (cached for the page's life)
  const lazy = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      lazy.unobserve(e.target);
      loadInto(e.target, e.target.dataset.src);
    }
  }, { rootMargin: "200px" });

  async function loadInto(img, url) {
    if (!apiKey) { img.src = url; return; }
    try {
      if (!blobUrls.has(url)) {
        const r = await api(url, { raw: true });
        blobUrls.set(url, URL.createObjectURL(await r.blob()));
      }
      img.src = blobUrls.get(url);
    } catch (err) {
      img.alt = `${img.alt} (not loaded: ${err.message})`;
    }
  }

  function setImage(img, url, { eager = false } = {}) {
    if (!apiKey) {
      img.loading = eager ? "eager" : "lazy";
      img.src = url;
    } else if (eager) loadInto(img, url);
    else { img.dataset.src = url; lazy.observe(img); }
  }

  // ---- status line -------------------------------------------------------------------------
  function say(target, text, isError = false) {
    const node = typeof target === "string" ? $(target) : target;
    node.textContent = text;
    node.classList.toggle("error", isError);
  }

  // ---- datasets and models -----------------------------------------------------------------
  const state = {
    datasets: [], chosen: new Set(), models: [], result: null, items: [], band: [0, 0],
    selected: new Set(), focus: 0, query: null, lastBody: null,
  };
  let pollTimer = null;

  async function loadModels() {
    state.models = await api("/v1/models");
    const select = $("#model");
    const keep = select.value;
    select.replaceChildren(el("option", { value: "", text: "serving model" }));
    for (const m of state.models) {
      const label = `${m.name}${m.serving ? " (serving)" : ""}${m.embeds_text ? " · text" : ""}`;
      select.append(el("option", { value: m.name, text: label }));
    }
    select.value = keep;
    updateModelNote();
  }

  function currentModel() {
    const name = $("#model").value;
    return state.models.find((m) => (name ? m.name === name : m.serving)) || null;
  }

  function updateModelNote() {
    const m = currentModel();
    say("#model-note", m ? `${m.dim}-d, ${m.embeds_text ? "images and text" : "image-only: text search needs a CLIP model"}` : "");
    say("#text-note", m && !m.embeds_text
      ? `${m.name} is image-only: free text cannot be searched; #concepts, images and boxes can.` : "");
  }

  async function loadDatasets() {
    state.datasets = await api("/v1/datasets");
    const statuses = await Promise.all(state.datasets.map((d) => api(`/v1/datasets/${d.id}/status`).catch(() => null)));
    const list = $("#dataset-list");
    list.replaceChildren();
    let busy = false;
    state.datasets.forEach((d, i) => {
      const st = statuses[i];
      const model = st && (st.models.find((m) => m.model_active && !m.covered) || st.models.find((m) => m.model_active) || st.models[0]);
      const preparing = model && model.stale > 0 && d.search_enabled;
      if (preparing || (st && st.job.running)) busy = true;
      const id = `ds-${d.id}`;
      const check = el("input", { type: "checkbox", id, checked: state.chosen.has(d.name), disabled: !d.search_enabled,
        onchange: (e) => { e.target.checked ? state.chosen.add(d.name) : state.chosen.delete(d.name); } });
      const stateText = !d.search_enabled ? "disabled"
        : !model ? "not embedded yet"
        : preparing ? `embeddings are being prepared: ${fmt(model.embedded)} of ${fmt(model.items)}`
        : `${fmt(model.embedded)} of ${fmt(model.items)} embedded`;
      const item = el("li", { class: `dataset${d.search_enabled ? "" : " off"}`, "data-dataset": d.name },
        el("div", { class: "dataset-head" }, check, el("label", { for: id, text: d.name })),
        el("div", { class: "muted", text: `${fmt(d.images)} images · ${fmt(d.annotations)} boxes` }),
        el("div", { class: "dataset-state", text: stateText }),
        model && d.search_enabled ? el("progress", { max: model.items || 1, value: model.embedded,
          "aria-label": `${d.name}: ${model.embedded} of ${model.items} embedded` }) : null,
        el("div", { class: "dataset-actions" },
          el("button", { type: "button", text: d.search_enabled ? "Disable" : "Enable",
            onclick: () => datasetAction(d, d.search_enabled ? "disable" : "enable") }),
          el("button", { type: "button", text: "Update", disabled: !d.search_enabled,
            title: "embed what is queued now", onclick: () => datasetAction(d, "embed") }),
          el("button", { type: "button", text: "Rename", onclick: () => renameDataset(d) }),
          el("button", { type: "button", class: "danger", text: "Delete", onclick: () => deleteDataset(d) })));
      list.append(item);
    });
    if (!state.datasets.length) list.append(el("li", { class: "muted", text: "No datasets yet: visearch ingest PATH -d NAME" }));
    clearTimeout(pollTimer);
    if (busy) pollTimer = setTimeout(() => loadDatasets().catch(() => {}), 2000); // live progress
  }

  async function datasetAction(d, action) {
    try {
      const r = await api(`/v1/datasets/${d.id}/${action}`, { method: "POST" });
      say("#dataset-message", action === "embed"
        ? `${d.name}: ${fmt(r.queued)} items queued, embedded by ${r.handled_by}` : `${d.name}: AI search ${action}d`);
      if (action === "disable") state.chosen.delete(d.name);
    } catch (err) { say("#dataset-message", err.message, true); }
    await loadDatasets();
  }

  async function renameDataset(d) {
    const name = prompt(`New name for dataset "${d.name}"`, d.name);
    if (!name || name === d.name) return;
    try {
      await api(`/v1/datasets/${d.id}`, { method: "PATCH", json: { name } });
      if (state.chosen.delete(d.name)) state.chosen.add(name);
      say("#dataset-message", `renamed ${d.name} to ${name}`);
    } catch (err) { say("#dataset-message", err.message, true); }
    await loadDatasets();
  }

  async function deleteDataset(d) {
    if (!confirm(`Delete dataset "${d.name}" with its ${fmt(d.images)} images, ${fmt(d.annotations)} boxes and all their vectors? This cannot be undone.`)) return;
    try {
      const r = await api(`/v1/datasets/${d.id}`, { method: "DELETE" });
      state.chosen.delete(d.name);
      say("#dataset-message", `deleted ${r.name}: ${fmt(r.images)} images, ${fmt(r.vectors)} vectors, ${fmt(r.queue_rows)} queue rows`);
    } catch (err) { say("#dataset-message", err.message, true); }
    await loadDatasets();
  }

  // ---- tabs ----------------------------------------------------------------------------------
  const tabs = {};
  function registerTab(id, handlers) { tabs[id] = handlers; }

  function showTab(id) {
    for (const t of document.querySelectorAll("[role=tab]")) {
      const on = t.dataset.tab === id;
      t.setAttribute("aria-selected", on);
      t.tabIndex = on ? 0 : -1;
    }
    for (const p of document.querySelectorAll("[data-panel]")) p.hidden = p.dataset.panel !== id;
    if (tabs[id] && tabs[id].show) tabs[id].show();
  }

  function initTabs() {
    const list = [...document.querySelectorAll("[role=tab]")];
    list.forEach((t, i) => {
      t.addEventListener("click", () => showTab(t.dataset.tab));
      t.addEventListener("keydown", (e) => {
        const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
        if (!step) return;
        const next = list[(i + step + list.length) % list.length];
        next.focus();
        showTab(next.dataset.tab);
      });
    });
  }

  // ---- query: an image (drop, paste, choose), a box drawn on it, text with #concepts -------
  function setQueryFile(file) {
    if (!file || !file.type.startsWith("image/")) { say("#summary", "That is not an image file.", true); return; }
    state.query = { file, crop: null };
    const img = $("#query-image");
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(file);
    $("#query-figure").hidden = false;
    setCrop(null);
  }

  function setCrop(box) {
    if (state.query) state.query.crop = box;
    const fields = ["#crop-x", "#crop-y", "#crop-w", "#crop-h"];
    fields.forEach((f, i) => { $(f).value = box ? Math.round(box[i] * 10) / 10 : ""; });
    drawCrop();
  }

  function drawCrop() {
    const img = $("#query-image"), div = $("#crop-box");
    const box = state.query && state.query.crop;
    if (!box || !img.naturalWidth) { div.hidden = true; return; }
    const s = img.clientWidth / img.naturalWidth;
    Object.assign(div.style, { left: `${box[0] * s}px`, top: `${box[1] * s}px`, width: `${box[2] * s}px`, height: `${box[3] * s}px` });
    div.hidden = false;
  }

  function initQuery() {
    const drop = $("#drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      setQueryFile(e.dataTransfer.files[0]);
    });
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#file").click(); } });
    $("#file").addEventListener("change", (e) => setQueryFile(e.target.files[0]));
    document.addEventListener("paste", (e) => {
      const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
      if (file) { e.preventDefault(); setQueryFile(file); }
    });
    $("#query-clear").addEventListener("click", () => { state.query = null; $("#query-figure").hidden = true; $("#file").value = ""; });
    $("#crop-clear").addEventListener("click", () => setCrop(null));
    for (const f of ["#crop-x", "#crop-y", "#crop-w", "#crop-h"]) {
      $(f).addEventListener("change", () => {
        const v = ["#crop-x", "#crop-y", "#crop-w", "#crop-h"].map((s) => parseFloat($(s).value));
        if (state.query) state.query.crop = v.every(Number.isFinite) ? v : null;
        drawCrop();
      });
    }
    // Drawing the box: drag on the image; coordinates in the image's own pixels (COCO).
    const img = $("#query-image");
    img.addEventListener("load", drawCrop);
    window.addEventListener("resize", drawCrop);
    let start = null;
    const toImage = (e) => {
      const r = img.getBoundingClientRect(), s = img.naturalWidth / r.width;
      return [Math.min(Math.max(e.clientX - r.left, 0), r.width) * s, Math.min(Math.max(e.clientY - r.top, 0), r.height) * s];
    };
    img.addEventListener("dragstart", (e) => e.preventDefault());
    $("#query-canvas").addEventListener("pointerdown", (e) => {
      if (!state.query) return;
      start = toImage(e);
      e.currentTarget.setPointerCapture(e.pointerId);
    });
    $("#query-canvas").addEventListener("pointermove", (e) => {
      if (!start) return;
      const p = toImage(e);
      setCrop([Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.abs(p[0] - start[0]), Math.abs(p[1] - start[1])]);
    });
    $("#query-canvas").addEventListener("pointerup", (e) => {
      if (!start) return;
      const p = toImage(e);
      const box = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.abs(p[0] - start[0]), Math.abs(p[1] - start[1])];
      start = null;
      setCrop(box[2] >= 2 && box[3] >= 2 ? box : null);
      if (state.query.crop) document.querySelector("input[name=mode][value=objects]").checked = true;
    });
    initAutocomplete();
  }

  // #concept autocomplete from GET /v1/concepts: on the term being typed (#x or -#x).
  function initAutocomplete() {
    const input = $("#query-text"), list = $("#suggestions");
    let active = -1, timer = null;
    const term = () => {
      const upto = input.value.slice(0, input.selectionStart);
      const m = upto.match(/(^|\s)(-?#)([^\s#]*)$/);
      return m ? { sign: m[2], text: m[3], start: upto.length - m[3].length - m[2].length } : null;
    };
    const close = () => { list.hidden = true; input.setAttribute("aria-expanded", "false"); active = -1; };
    const pick = (tag) => {
      const t = term();
      if (!t) return close();
      const end = input.selectionStart;
      input.value = `${input.value.slice(0, t.start)}${t.sign}${tag} ${input.value.slice(end)}`;
      const pos = t.start + t.sign.length + tag.length + 1;
      input.setSelectionRange(pos, pos);
      close();
      input.focus();
    };
    const mark = () => [...list.children].forEach((li, i) => li.setAttribute("aria-selected", i === active));
    input.addEventListener("input", () => {
      clearTimeout(timer);
      const t = term();
      if (!t) return close();
      timer = setTimeout(async () => {
        let found = [];
        try { found = await api(`/v1/concepts?prefix=${encodeURIComponent(t.text)}&limit=8`); } catch { return close(); }
        list.replaceChildren(...found.map((c, i) => el("li", { role: "option", id: `sug-${i}`, "data-tag": c.tag,
          onmousedown: (e) => { e.preventDefault(); pick(c.tag); } },
          `${t.sign}${c.tag}`, el("span", { class: "muted", text: ` ${fmt(c.images)} images, ${fmt(c.boxes)} boxes` }))));
        list.hidden = !found.length;
        input.setAttribute("aria-expanded", String(!!found.length));
        active = -1;
      }, 120);
    });
    input.addEventListener("keydown", (e) => {
      if (list.hidden) return;
      const n = list.children.length;
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        active = (active + (e.key === "ArrowDown" ? 1 : -1) + n) % n;
        mark();
      } else if ((e.key === "Enter" || e.key === "Tab") && active >= 0) {
        e.preventDefault();
        pick(list.children[active].dataset.tag);
      } else if (e.key === "Escape") close();
    });
    input.addEventListener("blur", () => setTimeout(close, 150));
  }

  // The request body of the search form (SearchBody of POST /v1/search).
  function formBody() {
    const text = $("#query-text").value;
    const exclude = [...text.matchAll(/(^|\s)-#([^\s#]+)/g)].map((m) => m[2]);
    const query = text.replace(/(^|\s)-#[^\s#]+/g, " ").trim();
    const body = {
      mode: document.querySelector("input[name=mode]:checked").value,
      depth: Number($("#filter-depth").value) || 1000, histogram_bins: 20,
    };
    if (query) body.query = query;
    if (exclude.length) body.exclude_concepts = exclude;
    if (state.chosen.size) body.datasets = [...state.chosen];
    if ($("#model").value) body.model = $("#model").value;
    const meta = $("#filter-metadata").value.trim();
    if (meta) {
      body.metadata = {};
      for (const pair of meta.split(",")) {
        const [k, ...v] = pair.split("=");
        if (k.trim()) body.metadata[k.trim()] = v.join("=").trim();
      }
    }
    if ($("#filter-from").value) body.created_from = `${$("#filter-from").value}T00:00:00Z`;
    if ($("#filter-to").value) body.created_to = `${$("#filter-to").value}T23:59:59Z`;
    if ($("#filter-min").value !== "") body.min_score = Number($("#filter-min").value);
    body.limit = Math.min(FIRST_PAGE, body.depth);
    return body;
  }

  // ---- search and results --------------------------------------------------------------------
  async function search(extra = {}, { useImage = true } = {}) {
    const body = { ...formBody(), ...extra };
    if (extra.image_ids || extra.annotation_id) delete body.query;
    if (extra.annotation_id && !extra.mode) body.mode = "objects";
    const withImage = useImage && state.query && !extra.image_ids && !extra.annotation_id;
    if (!withImage && !body.query && !body.image_ids && !body.annotation_id) {
      say("#summary", "Give an image, a box, text or #concepts to search for.", true);
      return;
    }
    say("#summary", "Searching…");
    state.lastBody = body;
    try {
      let res;
      if (withImage) {
        const form = new FormData();
        form.append("image", state.query.file, state.query.file.name || "query");
        if (state.query.crop) body.crop_xywh = state.query.crop.map((v) => Math.round(v * 100) / 100);
        form.append("params", JSON.stringify(body));
        res = await api("/v1/search", { method: "POST", form });
      } else res = await api("/v1/search", { method: "POST", json: body });
      showResult(res, res.items, res.histogram);
      await loadRest(res);
    } catch (err) {
      say("#summary", `Search failed: ${err.message}`, true);
    }
  }

  // The first page comes with the search (FIRST_PAGE items: shown at once); the rest of the
  // kept ranking (up to "Results kept") is read from the collection in one more request, so the
  // band and the limit work on every kept item without another model call.
  const FIRST_PAGE = 60;
  async function loadRest(res) {
    const grid = $("#grid");
    if (res.next_offset === null || res.next_offset === undefined) { grid.dataset.complete = "true"; return; }
    const page = await api(`/v1/collections/${res.collection_id}?offset=${res.next_offset}&limit=1000`);
    if (!state.result || state.result.collection_id !== res.collection_id) return; // a newer search
    state.items = state.items.concat(page.items);
    renderGrid();
    grid.dataset.complete = "true";
    say("#summary", $("#summary").textContent.replace(/^[\d,]+/, fmt(state.items.length)));
  }

  // Show a search response or a collection page: the chart, the band, the grid.
  function showResult(res, items, histogram) {
    state.result = { ...res, histogram };
    state.items = items;
    state.shown = (state.shown || 0) + 1;
    $("#grid").dataset.shown = state.shown; // results shown so far (tests wait on it)
    $("#grid").dataset.complete = res.next_offset ? "false" : "true";
    state.selected.clear();
    state.focus = 0;
    const h = histogram;
    state.band = h && h.bins ? [0, h.bins] : [0, 0];
    const what = res.mode === "objects" ? "objects" : "images";
    const how = res.exact ? "exact scan" : "HNSW index";
    const name = res.collection && res.collection.name ? ` · collection "${res.collection.name}"` : "";
    say("#summary", `${fmt(items.length)} ${what} of ${fmt(res.candidates)}${res.candidates_capped ? "+" : ""} candidates · ${res.model} · ${how}${name}`);
    const notes = $("#notes");
    notes.replaceChildren();
    if (res.note) notes.append(el("p", { class: "note", text: res.note }));
    if (res.coverage) {
      const c = res.coverage;
      notes.append(el("p", { class: "note", text: `Embeddings are being prepared: ${fmt(c.ready)} of ${fmt(c.total)} ${c.kind}s can be searched (${fmt(c.queued)} queued, ${fmt(c.failed)} failed).` }));
    }
    const kept = res.total ?? items.length;
    if (h && h.considered > kept) {
      notes.append(el("p", { class: "note", text: `The chart counts all ${fmt(h.considered)} candidates; the grid holds the best ${fmt(kept)} (raise "Results kept" up to 1000 or narrow the filters).` }));
    }
    if (h && h.sampled) notes.append(el("p", { class: "note", text: `The chart was sampled: scores of ${fmt(h.considered)} randomly chosen candidates.` }));
    drawChart();
    updateButtons();
    renderGrid();
  }

  // Bin of a score exactly as PostgreSQL's width_bucket in score_histogram of sql/search/statements.sql (0-based).
  function binOf(s, h) {
    if (!(h.hi > h.lo)) return 0;
    if (s >= h.hi) return h.bins - 1;
    return Math.max(0, Math.min(h.bins - 1, Math.floor(h.bins * ((s - h.lo) / (h.hi - h.lo)))));
  }

  function drawChart() {
    const h = state.result && state.result.histogram;
    const row = $("#chart-row");
    row.hidden = !(h && h.bins && h.counts.length && h.considered);
    if (row.hidden) return;
    const svg = $("#histogram");
    svg.replaceChildren();
    const max = Math.max(...h.counts, 1), w = 400 / h.bins;
    h.counts.forEach((c, k) => {
      const inBand = k >= state.band[0] && k < state.band[1];
      const height = (c / max) * 86;
      const bar = svgEl("rect", { x: k * w + 0.5, y: 90 - height, width: Math.max(w - 1, 1), height, class: inBand ? "bar in" : "bar" });
      bar.append(svgEl("title"));
      bar.firstChild.textContent = `${score(h.edges[k])} – ${score(h.edges[k + 1])}: ${c}`;
      svg.append(bar);
    });
    for (const id of ["#band-lo", "#band-hi"]) $(id).max = h.bins;
    $("#band-lo").value = state.band[0];
    $("#band-hi").value = state.band[1];
    const inBand = h.counts.slice(state.band[0], state.band[1]).reduce((a, b) => a + b, 0);
    say("#band-caption", `scores ${score(h.edges[state.band[0]])} to ${score(h.edges[state.band[1]])}: ${fmt(inBand)} of ${fmt(h.considered)} candidates${h.sampled ? " (sampled)" : ""}`);
    $("#band-caption").dataset.count = inBand;
  }

  function setBand(lo, hi) {
    const h = state.result.histogram;
    lo = Math.max(0, Math.min(lo, h.bins - 1));
    hi = Math.max(lo + 1, Math.min(hi, h.bins));
    state.band = [lo, hi];
    drawChart();
    renderGrid();
  }

  function initChart() {
    $("#band-lo").addEventListener("input", (e) => {
      const v = Number(e.target.value);
      setBand(Math.min(v, state.band[1] - 1), state.band[1]);
    });
    $("#band-hi").addEventListener("input", (e) => {
      const v = Number(e.target.value);
      setBand(state.band[0], Math.max(v, state.band[0] + 1));
    });
    $("#band-above").addEventListener("click", () => setBand(Math.floor(state.result.histogram.bins / 2), state.result.histogram.bins));
    $("#band-below").addEventListener("click", () => setBand(0, Math.floor(state.result.histogram.bins / 2)));
    $("#band-all").addEventListener("click", () => setBand(0, state.result.histogram.bins));
    $("#show-limit").addEventListener("input", renderGrid);
  }

  // The query's own stored items ("more like this") are not on the chart: the API's histogram
  // leaves them out. The grid shows them while the band spans the whole chart, not in a band.
  function isQueryItem(it) {
    const b = state.lastBody || {};
    if (b.annotation_id !== undefined && b.annotation_id !== null) return it.annotation_id === b.annotation_id;
    const isImage = it.annotation_id === null || it.annotation_id === undefined;
    return isImage && Array.isArray(b.image_ids) && b.image_ids.includes(it.image_id);
  }

  function visibleItems() {
    const h = state.result && state.result.histogram;
    let items = state.items;
    if (h && h.bins && h.considered) {
      const whole = state.band[0] === 0 && state.band[1] === h.bins;
      items = items.filter((it) => {
        if (isQueryItem(it)) return whole;
        const b = binOf(it.score, h);
        return b >= state.band[0] && b < state.band[1];
      });
    }
    const limit = Number($("#show-limit").value) || items.length;
    return items.slice(0, limit);
  }

  function renderGrid() {
    const grid = $("#grid");
    const items = visibleItems();
    grid.replaceChildren();
    grid.dataset.count = items.length;
    items.forEach((it, i) => grid.append(card(it, i)));
    state.focus = Math.min(state.focus, Math.max(items.length - 1, 0));
    if (grid.firstChild) grid.children[state.focus].tabIndex = 0;
    updateButtons();
  }

  function itemLabel(it) {
    const what = it.annotation_id ? `${it.concept || "box"} in ${it.file_name || `image ${it.image_id}`}` : (it.file_name || `image ${it.image_id}`);
    return `rank ${it.rank}, score ${score(it.score)}: ${what}`;
  }

  function card(it, index) {
    const objects = it.annotation_id !== null && it.annotation_id !== undefined;
    const img = el("img", { class: "thumb", alt: itemLabel(it), width: 160, height: 160, decoding: "async" });
    img.addEventListener("load", () => { // first thumbnail painted (bench/bench_console.py)
      if (!window.__visearchFirstThumb) requestAnimationFrame(() => { window.__visearchFirstThumb ||= performance.now(); });
    }, { once: true });
    setImage(img, objects ? `${it.crop_url}?size=256` : it.thumbnail_url, { eager: index < 12 });
    const figure = el("div", { class: "figure" }, img);
    if (objects) { // on hover: the whole image with the box drawn on it
      const hover = el("div", { class: "hover", "aria-hidden": "true" });
      figure.append(hover);
      figure.addEventListener("mouseenter", () => {
        if (hover.firstChild) return;
        const full = el("img", { alt: "" });
        setImage(full, it.thumbnail_url, { eager: true });
        const svg = svgEl("svg", { viewBox: `0 0 ${it.width} ${it.height}`, preserveAspectRatio: "xMidYMid meet" });
        const [x, y, w, h] = it.bbox_xywh;
        svg.append(svgEl("rect", { x, y, width: w, height: h, class: "box" }));
        hover.append(full, svg);
      });
    }
    const check = el("input", { type: "checkbox", "aria-label": `select ${itemLabel(it)}`, checked: state.selected.has(it.rank),
      onchange: (e) => { toggleSelect(it.rank, e.target.checked); } });
    const li = el("li", { class: "card", tabindex: -1, "data-rank": it.rank, "data-image-id": it.image_id,
      "data-annotation-id": objects ? it.annotation_id : null, "data-score": it.score },
      el("button", { type: "button", class: "thumb-button", title: "more like this", tabindex: -1,
        onclick: () => moreLikeThis(it) }, figure),
      el("div", { class: "card-foot" },
        el("label", { class: "check" }, check, el("span", { class: "score", text: score(it.score) })),
        el("span", { class: "caption", text: objects ? `#${(it.concept || "").replace(/\s+/g, "_")}` : (it.file_name || "") }),
        el("button", { type: "button", class: "info", tabindex: -1, "aria-label": `details of ${itemLabel(it)}`, text: "info",
          onclick: () => openDetail(it.image_id) })));
    li.addEventListener("focus", () => { state.focus = index; });
    return li;
  }

  function moreLikeThis(it) {
    if (it.annotation_id) search({ annotation_id: it.annotation_id, mode: "objects" });
    else search({ image_ids: [it.image_id], mode: state.result ? state.result.mode : "images" });
  }

  function toggleSelect(rank, on) {
    on ? state.selected.add(rank) : state.selected.delete(rank);
    const box = document.querySelector(`.card[data-rank="${rank}"] input[type=checkbox]`);
    if (box) box.checked = on;
    updateButtons();
  }

  function selectedItems() { return state.items.filter((it) => state.selected.has(it.rank)); }

  function updateButtons() {
    const n = state.selected.size, has = !!(state.result && state.result.collection_id);
    say("#selection-count", `${n} selected`);
    $("#more-like-these").disabled = !n;
    $("#select-none").disabled = !n;
    $("#tag-selected").disabled = !n;
    $("#remove-selected").disabled = !n;
    for (const id of ["#save-collection", "#tag-all", "#copy", "#export-coco", "#export-csv"]) $(id).disabled = !has;
  }

  // Keyboard: arrows move through the grid, Enter = more like this, Space = select, i = details.
  function initGridKeys() {
    $("#grid").addEventListener("keydown", (e) => {
      const cards = [...$("#grid").children];
      if (!cards.length) return;
      const cols = Math.max(1, Math.round($("#grid").clientWidth / cards[0].offsetWidth));
      const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols, Home: -1e9, End: 1e9 };
      const it = state.items.find((x) => String(x.rank) === cards[state.focus].dataset.rank);
      if (e.key in moves) {
        e.preventDefault();
        const next = Math.max(0, Math.min(cards.length - 1, state.focus + moves[e.key]));
        cards[state.focus].tabIndex = -1;
        cards[next].tabIndex = 0;
        cards[next].focus();
        state.focus = next;
      } else if (e.key === "Enter") { e.preventDefault(); moreLikeThis(it); }
      else if (e.key === " ") { e.preventDefault(); toggleSelect(it.rank, !state.selected.has(it.rank)); }
      else if (e.key === "i") { e.preventDefault(); openDetail(it.image_id); }
    });
  }

  // ---- the temporary collection: save, tag, copy, remove, export ----------------------------
  async function collectionAction(fn, message) {
    try { say("#action-message", await fn() || message); }
    catch (err) { say("#action-message", err.message, true); }
  }

  function initActions() {
    const cid = () => state.result.collection_id;
    $("#more-like-these").addEventListener("click", () => {
      const ids = [...new Set(selectedItems().map((it) => it.image_id))];
      search({ image_ids: ids, mode: state.result.mode });
    });
    $("#select-none").addEventListener("click", () => { for (const r of [...state.selected]) toggleSelect(r, false); });
    $("#save-collection").addEventListener("click", () => collectionAction(async () => {
      const name = $("#save-name").value.trim();
      if (!name) throw new Error("give the collection a name");
      const c = await api(`/v1/collections/${cid()}/save`, { method: "POST", json: { name } });
      return `saved as "${c.name}" (${fmt(c.items)} items)`;
    }));
    const tag = (imageIds) => collectionAction(async () => {
      const concept = $("#tag-concept").value.trim().replace(/^#/, "");
      if (!concept) throw new Error("give a concept to tag with");
      const r = await api(`/v1/collections/${cid()}/tags`, { method: "POST", json: { concepts: [concept], image_ids: imageIds } });
      return `tagged ${fmt(imageIds.length || r.images)} images with #${concept.replace(/\s+/g, "_")}: ${fmt(r.labels_added)} labels added`;
    });
    $("#tag-all").addEventListener("click", () => tag([]));
    $("#tag-selected").addEventListener("click", () => tag([...new Set(selectedItems().map((it) => it.image_id))]));
    $("#copy").addEventListener("click", () => collectionAction(async () => {
      const dataset = $("#copy-dataset").value.trim();
      if (!dataset) throw new Error("give the dataset to copy into");
      const r = await api(`/v1/collections/${cid()}/copy`, { method: "POST", json: { dataset, create: true, annotations: true } });
      await loadDatasets();
      return `copied ${fmt(r.images_copied)} images (${fmt(r.images_existing)} were there) and ${fmt(r.annotations_copied)} boxes into ${r.dataset}`;
    }));
    $("#remove-selected").addEventListener("click", () => collectionAction(async () => {
      const ranks = [...state.selected];
      const q = ranks.map((r) => `rank=${r}`).join("&");
      const r = await api(`/v1/collections/${cid()}/items?${q}`, { method: "DELETE" });
      state.items = state.items.filter((it) => !r.removed.includes(it.rank));
      state.selected.clear();
      renderGrid();
      return `removed ${fmt(r.removed.length)} items from the collection`;
    }));
    const download = (format) => collectionAction(async () => {
      const r = await api(`/v1/collections/${cid()}/export?format=${format}`, { raw: true });
      const url = URL.createObjectURL(await r.blob());
      const a = el("a", { href: url, download: `collection-${cid()}.${format === "coco" ? "json" : "csv"}` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      return `exported collection ${cid()} as ${format === "coco" ? "COCO JSON" : "CSV"}`;
    });
    $("#export-coco").addEventListener("click", () => download("coco"));
    $("#export-csv").addEventListener("click", () => download("csv"));
  }

  async function openCollection(id) {
    try {
      const page = await api(`/v1/collections/${id}?offset=0&limit=1000`);
      const c = page.collection;
      showResult({ collection_id: c.id, collection: c, mode: c.mode, model: c.model, exact: c.exact,
        candidates: c.candidates, candidates_capped: false, note: c.note, coverage: null }, page.items, page.histogram);
      showTab("search");
    } catch (err) { say("#summary", err.message, true); }
  }

  registerTab("collections", {
    async show() {
      const list = $("#collection-list");
      try {
        const all = await api("/v1/collections");
        list.replaceChildren(...all.map((c) => el("li", {},
          el("button", { type: "button", onclick: () => openCollection(c.id),
            text: `${c.saved ? c.name : "(your last search)"} · ${fmt(c.items)} ${c.mode} · ${c.model}` }),
          c.saved ? el("button", { type: "button", class: "danger", text: "Delete", "aria-label": `delete collection ${c.name}`,
            onclick: async () => { if (confirm(`Delete collection "${c.name}"? Its images stay.`)) { await api(`/v1/collections/${c.id}`, { method: "DELETE" }); tabs.collections.show(); } } }) : null)));
        if (!all.length) list.append(el("li", { class: "muted", text: "No collections yet: search, then save." }));
      } catch (err) { list.replaceChildren(el("li", { class: "error", text: err.message })); }
    },
  });

  // ---- detail view ---------------------------------------------------------------------------
  let detailId = null;
  async function openDetail(imageId) {
    const dialog = $("#detail");
    try {
      const [d, captions] = await Promise.all([api(`/v1/images/${imageId}`), api(`/v1/images/${imageId}/captions`)]);
      detailId = d.id;
      $("#detail-title").textContent = `${d.file_name || `image ${d.id}`} · ${d.dataset} · ${d.width}×${d.height} ${d.format}`;
      const img = $("#detail-image");
      img.alt = `${d.file_name || `image ${d.id}`} with ${d.annotations.length} boxes`;
      setImage(img, `/v1/images/${d.id}/thumbnail?size=1024`, { eager: true });
      const svg = $("#detail-boxes");
      svg.setAttribute("viewBox", `0 0 ${d.width} ${d.height}`);
      svg.replaceChildren();
      const list = $("#detail-annotations");
      list.replaceChildren();
      // big boxes first, so that smaller ones lie on top and can be clicked
      const byArea = [...d.annotations].sort((p, q) => q.bbox[2] * q.bbox[3] - p.bbox[2] * p.bbox[3]);
      for (const a of byArea) {
        const [x, y, w, h] = a.bbox;
        const go = () => { dialog.close(); search({ annotation_id: a.id, mode: "objects" }); };
        const rect = svgEl("rect", { x, y, width: w, height: h, class: "box", tabindex: 0, role: "button",
          "aria-label": `${a.concept || "box"} ${a.id}: search objects like it`, "data-annotation-id": a.id });
        rect.append(svgEl("title"));
        rect.firstChild.textContent = `${a.concept || "box"} (${a.id}): click to search objects like it`;
        rect.addEventListener("click", go);
        rect.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
        svg.append(rect);
        list.append(el("li", {}, el("button", { type: "button", onclick: go, text: `#${(a.concept || "box").replace(/\s+/g, "_")}` }),
          ` [${a.bbox.map((v) => Math.round(v)).join(", ")}] ${a.source}${a.iscrowd ? " crowd" : ""}`));
      }
      $("#detail-labels").textContent = d.labels.map((l) => `#${l.concept.replace(/\s+/g, "_")} (${l.source})`).join(", ") || "none";
      $("#detail-captions").replaceChildren(...(captions.length ? captions.map((c) => el("li", { text: c.text })) : [el("li", { class: "muted", text: "none" })]));
      const meta = { id: d.id, external_id: d.external_id, sha256: d.sha256.slice(0, 16) + "…", source: d.source_uri, created: d.created_at, ...d.metadata };
      $("#detail-meta").replaceChildren(...Object.entries(meta).filter(([, v]) => v !== null && v !== undefined && v !== "")
        .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) })]));
      if (!dialog.open) dialog.showModal();
      $("#detail-close").focus();
    } catch (err) { say("#summary", err.message, true); }
  }

  function initDetail() {
    const dialog = $("#detail");
    $("#detail-close").addEventListener("click", () => dialog.close());
    $("#detail-more").addEventListener("click", () => { dialog.close(); search({ image_ids: [detailId], mode: "images" }); });
    $("#detail-objects").addEventListener("click", () => { dialog.close(); search({ image_ids: [detailId], mode: "objects" }); });
    $("#detail-delete").addEventListener("click", async () => {
      if (!confirm(`Delete image ${detailId} with its boxes, labels, captions and vectors? This cannot be undone.`)) return;
      try {
        await api("/v1/images/delete", { method: "POST", json: { image_ids: [detailId] } });
        dialog.close();
        state.items = state.items.filter((it) => it.image_id !== detailId);
        renderGrid();
        say("#action-message", `deleted image ${detailId}`);
        loadDatasets();
      } catch (err) { say("#action-message", err.message, true); }
    });
  }

  // ---- find images by file name or external id ----------------------------------------------
  function initFind() {
    $("#find-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const list = $("#find-results");
      try {
        const q = encodeURIComponent($("#find-term").value.trim());
        const found = await api(`/v1/images?q=${q}&prefix=${$("#find-prefix").checked}&limit=50`);
        list.replaceChildren(...found.map((m) => {
          const img = el("img", { alt: m.file_name || `image ${m.id}`, width: 64, height: 64 });
          setImage(img, `/v1/images/${m.id}/thumbnail?size=128`);
          return el("li", {}, el("button", { type: "button", onclick: () => openDetail(m.id) }, img,
            ` ${m.file_name || ""} · id ${m.id} · external ${m.external_id || "–"} · ${m.dataset}`));
        }));
        if (!found.length) list.append(el("li", { class: "muted", text: "no image has that file name or external id" }));
      } catch (err) { list.replaceChildren(el("li", { class: "error", text: err.message })); }
    });
  }

  // ---- start ---------------------------------------------------------------------------------
  // Links a person can open: #image=42 (detail), #image_ids=1,2 / #annotation_id=5 / #q=text
  // (a search), #collection=12.
  function fromHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.get("image")) openDetail(Number(p.get("image")));
    else if (p.get("collection")) openCollection(Number(p.get("collection")));
    else if (p.get("image_ids")) search({ image_ids: p.get("image_ids").split(",").map(Number), mode: p.get("mode") || "images" });
    else if (p.get("annotation_id")) search({ annotation_id: Number(p.get("annotation_id")), mode: "objects" });
    else if (p.get("q")) { $("#query-text").value = p.get("q"); search(); }
  }

  async function start() {
    $("#key-form").addEventListener("submit", () => {
      apiKey = $("#key-input").value.trim();
      sessionStorage.setItem(KEY_STORE, apiKey);
      const waiting = keyWaiters;
      keyWaiters = [];
      waiting.forEach((resolve) => resolve());
    });
    $("#key-button").addEventListener("click", () => askKey());
    if (document.body.dataset.apiKeysRequired === "true") $("#key-button").hidden = false;
    initTabs();
    registerTab("search", {});
    initQuery();
    initChart();
    initGridKeys();
    initActions();
    initDetail();
    initFind();
    $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
    $("#model").addEventListener("change", updateModelNote);
    if (document.body.dataset.apiKeysRequired === "true" && !apiKey) await askKey();
    // a linked search starts at once: it needs neither the dataset list nor the model list
    const lists = Promise.all([loadDatasets(), loadModels()]).catch((err) => say("#dataset-message", err.message, true));
    fromHash();
    window.addEventListener("hashchange", fromHash);
    await lists;
    document.body.dataset.ready = "true";
  }

  return { start, registerTab, api, search, showTab, state };
})();

document.addEventListener("DOMContentLoaded", () => Console.start());
