// The /ui page of jepa-serve: collections, search, and surprise curves. Plain JavaScript, no library, no network
// but this server. Every API call carries the key typed above (Authorization: Bearer), kept for this tab only.
"use strict";

(() => {
  const page = document.body;
  const base = page.dataset.base || "";
  const thumbnailsOn = page.dataset.thumbnails === "on";
  const byId = (id) => document.getElementById(id);
  const KEY_STORE = "jepa-serve-api-key";
  const COLORS = { curve: "#2563eb", threshold: "#d97706", alarm: "#d62828", axis: "#5c6773", grid: "#e5e9ee" };
  let apiKey = sessionStorage.getItem(KEY_STORE) || "";
  const state = { collections: [], models: [], lastHits: null, lastSurprise: null, busy: 0 };
  window.jepaUI = state; // for people poking at the page (and the browser test)

  class ApiError extends Error {
    constructor(status, code, message, detail) {
      super(message);
      this.status = status;
      this.code = code;
      this.detail = detail || {};
    }
  }

  async function api(method, path, body) {
    const headers = {};
    if (apiKey) headers.Authorization = "Bearer " + apiKey;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(base + path, init);
    } catch (error) {
      throw new ApiError(0, "connection_error", "the server cannot be reached (" + error.message + ")");
    }
    if (!response.ok) {
      let answer = null;
      try { answer = await response.json(); } catch (ignored) { answer = null; }
      const error = (answer && answer.error) || {};
      throw new ApiError(response.status, error.code || "http_" + response.status,
                         error.message || response.statusText, error.detail);
    }
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : response.blob();
  }

  function say(text, kind) {
    const status = byId("status");
    status.textContent = text;
    status.className = kind || "";
  }

  function fail(where, error) {
    if (error.status === 401) {
      say("This server needs an API key: type it above and press Use key.", "error");
      byId("api-key").focus();
    } else if (error.status === 403) {
      say(where + ": this key lacks the scope (" + error.message + ")", "error");
    } else {
      say(where + ": " + error.code + ": " + error.message, "error");
    }
  }

  async function busy(what, work) {
    state.busy += 1;
    page.dataset.busy = String(state.busy);
    say(what + "…");
    try {
      await work();
    } catch (error) {
      fail(what, error);
      return;
    } finally {
      state.busy -= 1;
      page.dataset.busy = String(state.busy);
    }
    say(what + ": done", "ok");
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "—" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
  }

  function option(select, value, label) {
    const item = document.createElement("option");
    item.value = value;
    item.textContent = label;
    select.appendChild(item);
  }

  function showCollections() {
    const body = byId("collections").querySelector("tbody");
    body.replaceChildren();
    const select = byId("search-collection");
    const chosen = select.value;
    select.replaceChildren();
    for (const c of state.collections) {
      const row = document.createElement("tr");
      row.dataset.name = c.name;
      cell(row, c.name);
      cell(row, c.count, "number");
      cell(row, c.dim, "number");
      cell(row, c.metric);
      cell(row, c.index_in_use || c.index);
      cell(row, c.model);
      cell(row, c.space_id ? c.space_id.slice(0, 16) + "…" : null, "space");
      row.title = c.space_id || "";
      row.addEventListener("click", () => { select.value = c.name; byId("search-id").focus(); });
      body.appendChild(row);
      option(select, c.name, c.name + " (" + c.count + ")");
    }
    if (chosen && state.collections.some((c) => c.name === chosen)) select.value = chosen;
    byId("collections-empty").hidden = state.collections.length > 0;
    page.dataset.collections = String(state.collections.length);
  }

  function showModels() {
    const select = byId("surprise-model");
    select.replaceChildren();
    for (const m of state.models.filter((m) => m.surprise)) {
      option(select, m.name, m.name + " (" + m.family + ", threshold " + m.surprise.threshold + ")");
    }
  }

  async function refresh() {
    await busy("Loading collections", async () => {
      state.collections = await api("GET", "/collections");
      showCollections();
      state.models = (await api("GET", "/models")).models;
      showModels();
    });
  }

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(new ApiError(0, "file_unreadable", "cannot read " + file.name));
      reader.readAsDataURL(file);
    });
  }

  const isVideo = (file) => file.type.startsWith("video/") || /\.(mp4|m4v|mov|webm|mkv|avi)$/i.test(file.name);

  async function mediaInput(file) {
    return { [isVideo(file) ? "video" : "image"]: await readBase64(file) };
  }

  function encodePath(path) {
    return path.split("/").map(encodeURIComponent).join("/");
  }

  async function thumbnail(img, path) {
    try {
      const blob = await api("GET", "/ui/media/" + encodePath(path));
      img.src = URL.createObjectURL(blob);
      img.alt = path;
      img.dataset.loaded = "true";
    } catch (error) {
      img.dataset.loaded = "false";
      img.title = error.code + ": " + error.message;
    }
  }

  function showHits(hits, collection) {
    const list = byId("hits");
    list.replaceChildren();
    hits.forEach((hit, i) => {
      const item = document.createElement("li");
      item.dataset.id = hit.id;
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = "";
      const path = hit.metadata && hit.metadata.path;
      if (thumbnailsOn && typeof path === "string" && hit.metadata.kind !== "video") thumbnail(img, path);
      item.appendChild(img);
      const text = document.createElement("div");
      const rank = document.createElement("div");
      rank.className = "rank";
      rank.textContent = "#" + (i + 1);
      const id = document.createElement("div");
      id.className = "id";
      id.textContent = hit.id;
      const score = document.createElement("div");
      score.className = "score";
      score.textContent = "score " + hit.score.toFixed(4);
      const meta = document.createElement("dl");
      for (const [key, value] of Object.entries(hit.metadata || {})) {
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
        meta.append(dt, dd);
      }
      text.append(rank, id, score, meta);
      item.appendChild(text);
      list.appendChild(item);
    });
    byId("search-summary").textContent = hits.length + " hit(s) in " + collection;
  }

  async function search(event) {
    event.preventDefault();
    await busy("Searching", async () => {
      const collection = byId("search-collection").value;
      const file = byId("search-file").files[0];
      const id = byId("search-id").value.trim();
      if (!collection) throw new ApiError(0, "no_collection", "pick a collection first");
      const body = { collection, k: Number(byId("search-k").value) || 8 };
      if (id) body.id = id;
      else if (file) body.input = await mediaInput(file);
      else throw new ApiError(0, "no_query", "choose an image or type a stored id");
      const answer = await api("POST", "/search", body);
      state.lastHits = answer.hits;
      showHits(answer.hits, collection);
    });
  }

  async function surpriseRequest() {
    const files = [...byId("surprise-files").files];
    if (!files.length) throw new ApiError(0, "no_frames", "choose frames, a video or a request file");
    let body;
    if (files.length === 1 && /\.json$/i.test(files[0].name)) {
      body = JSON.parse(await files[0].text());
    } else {
      files.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
      if (files.some(isVideo) && files.length > 1) {
        throw new ApiError(0, "mixed_input", "one video, or images: not both");
      }
      body = { observations: await Promise.all(files.map(mediaInput)) };
    }
    const actions = byId("surprise-actions").value.trim();
    if (actions) {
      try { body.actions = JSON.parse(actions); } catch (error) {
        throw new ApiError(0, "invalid_actions", "actions are not JSON: " + error.message);
      }
    }
    const model = byId("surprise-model").value;
    if (model) body.model = model;
    const threshold = byId("surprise-threshold").value;
    if (threshold !== "") body.threshold = Number(threshold);
    return body;
  }

  async function surprise(event) {
    event.preventDefault();
    await busy("Scoring", async () => {
      const answer = await api("POST", "/surprise", await surpriseRequest());
      state.lastSurprise = answer;
      drawCurve(byId("surprise-curve"), answer);
      const listed = answer.surprising.length ? answer.surprising.join(", ") : "none";
      byId("surprise-caption").textContent = answer.steps.length + " steps scored by " + answer.model +
        "; threshold " + answer.threshold + "; surprising steps: " + listed;
    });
  }

  function ticks(low, high, count) {
    const span = high - low || 1;
    const raw = span / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    const out = [];
    for (let t = Math.ceil(low / step) * step; t <= high + 1e-9; t += step) out.push(Number(t.toFixed(6)));
    return out;
  }

  // The score per step as a line, the threshold dashed, the surprising steps as red discs. Coordinates of what
  // was drawn go into the canvas's data attributes (the browser test reads the pixels there).
  function drawCurve(canvas, answer) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height;
    const pad = { left: 60, right: 20, top: 20, bottom: 44 };
    const steps = answer.steps, scores = answer.scores, threshold = answer.threshold;
    const lowY = Math.min(0, threshold, ...scores), highY = Math.max(threshold, ...scores) * 1.08 || 1;
    const firstX = steps[0], lastX = steps[steps.length - 1];
    const x = (s) => pad.left + (lastX === firstX ? 0.5 : (s - firstX) / (lastX - firstX)) * (W - pad.left - pad.right);
    const y = (v) => H - pad.bottom - (v - lowY) / (highY - lowY) * (H - pad.top - pad.bottom);
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    ctx.font = "12px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (const t of ticks(lowY, highY, 5)) {
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath(); ctx.moveTo(pad.left, y(t)); ctx.lineTo(W - pad.right, y(t)); ctx.stroke();
      ctx.fillStyle = COLORS.axis;
      ctx.textAlign = "right";
      ctx.fillText(String(t), pad.left - 6, y(t) + 4);
    }
    ctx.textAlign = "center";
    for (const t of ticks(firstX, lastX, Math.min(10, steps.length))) {
      if (Number.isInteger(t)) ctx.fillText(String(t), x(t), H - pad.bottom + 16);
    }
    ctx.fillText("step (observation index)", (pad.left + W - pad.right) / 2, H - 8);
    ctx.save();
    ctx.translate(14, (pad.top + H - pad.bottom) / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText("surprise (z-score)", 0, 0);
    ctx.restore();
    ctx.strokeStyle = COLORS.axis;
    ctx.beginPath(); ctx.moveTo(pad.left, pad.top); ctx.lineTo(pad.left, H - pad.bottom);
    ctx.lineTo(W - pad.right, H - pad.bottom); ctx.stroke();

    const thresholdY = Math.round(y(threshold)); // on the pixel grid: a 2 px line covers two whole rows
    ctx.strokeStyle = COLORS.threshold;
    ctx.lineWidth = 2;
    ctx.setLineDash([8, 6]);
    ctx.beginPath(); ctx.moveTo(pad.left, thresholdY); ctx.lineTo(W - pad.right, thresholdY); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = COLORS.threshold;
    ctx.textAlign = "right";
    ctx.fillText("threshold " + threshold, W - pad.right - 4, thresholdY - 6);

    ctx.strokeStyle = COLORS.curve;
    ctx.lineWidth = 2;
    ctx.beginPath();
    steps.forEach((s, i) => (i ? ctx.lineTo(x(s), y(scores[i])) : ctx.moveTo(x(s), y(scores[i]))));
    ctx.stroke();
    const marks = [];
    ctx.textAlign = "left";
    steps.forEach((s, i) => {
      const alarm = answer.surprising.includes(s);
      ctx.fillStyle = alarm ? COLORS.alarm : COLORS.curve;
      ctx.beginPath();
      ctx.arc(x(s), y(scores[i]), alarm ? 7 : 3.5, 0, 2 * Math.PI);
      ctx.fill();
      if (alarm) {
        marks.push([Math.round(x(s)), Math.round(y(scores[i]))]);
        ctx.fillText(String(s), x(s) + 10, y(scores[i]) - 8);
      }
    });
    canvas.dataset.marks = JSON.stringify(marks);
    canvas.dataset.thresholdY = String(thresholdY);
    canvas.dataset.steps = String(steps.length);
  }

  byId("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = byId("api-key").value.trim();
    if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey);
    else sessionStorage.removeItem(KEY_STORE);
    refresh();
  });
  byId("refresh").addEventListener("click", refresh);
  byId("search-form").addEventListener("submit", search);
  byId("surprise-form").addEventListener("submit", surprise);
  if (apiKey) byId("api-key").value = apiKey;
  refresh();
})();
