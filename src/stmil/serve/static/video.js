// The video page: the video with its G x G heat map and boxes drawn on a canvas in step with
// playback, and the per-frame score curves that seek the video when clicked.
// Frame f is shown during [f / fps, (f + 1) / fps); a seek to f goes to its middle.
"use strict";

const $ = (id) => document.getElementById(id);
const page = {detail: null, sources: [], mapSource: null, visible: new Set(), frame: 0,
              playing: false, lastTick: 0, dirty: true, drawn: -1, ready: false, drag: false};
const video = $("video");

// --- time -------------------------------------------------------------------------------

function nFrames() { return page.detail.n_frames || 1; }
function fps() { return page.detail.fps || 25; }
function clampFrame(f) { return Math.max(0, Math.min(nFrames() - 1, Math.round(f))); }
function hasVideo() { return Boolean(page.detail && page.detail.media); }

function currentFrame() {
  if (hasVideo()) return clampFrame(Math.floor(video.currentTime * fps() + 1e-3));
  return page.frame;
}

function seek(f) {
  f = clampFrame(f);
  page.frame = f;
  if (hasVideo()) video.currentTime = (f + 0.5) / fps();
  page.dirty = true;
}

function togglePlay() {
  if (hasVideo()) {
    if (video.paused) video.play().catch((e) => stmil.showError(`cannot play: ${e.message}`));
    else video.pause();
  } else {
    page.playing = !page.playing;
    page.lastTick = performance.now();
  }
}

function pause() {
  if (hasVideo()) video.pause();
  page.playing = false;
}

// Math.max(...xs) overflows the stack on long videos: a loop.
function extent(arrays) {
  let lo = Infinity, hi = -Infinity;
  for (const xs of arrays) for (const x of xs) { if (x < lo) lo = x; if (x > hi) hi = x; }
  return [lo, hi];
}

function clipIndex(src, f) {
  const r = src.clip_ranges;
  let k = 0;
  while (k + 1 < r.length && r[k + 1][0] <= f) k += 1;
  return k;
}

// --- the overlay on the video -------------------------------------------------------------

const {heat, fitCanvas} = stmil;

function drawOverlay(f) {
  const canvas = $("overlay");
  const dpr = fitCanvas(canvas);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const d = page.detail;
  const src = page.sources.find((s) => s.name === page.mapSource);
  if (!d.width || !d.height) return;
  const sx = canvas.width / d.width, sy = canvas.height / d.height;
  const rect = (b) => [b[0] * sx, b[1] * sy, (b[2] - b[0]) * sx, (b[3] - b[1]) * sy];
  if (src && !src.error) {
    const k = clipIndex(src, f);
    if ($("show-map").checked) {
      const opacity = Number($("opacity").value);
      if (src.peakCell === undefined) src.peakCell = extent(src.clip_maps)[1];
      const top = $("scale").value === "peak" ? Math.max(1e-9, src.peakCell) : 1;
      src.cells.forEach((cell, i) => {
        ctx.fillStyle = heat(src.clip_maps[k][i] / top, opacity);
        ctx.fillRect(...rect(cell));
      });
    }
    const box = src.clip_boxes[k];
    if ($("show-pred").checked && box) {
      ctx.strokeStyle = "#00e5ff";
      ctx.lineWidth = 2 * dpr;
      ctx.strokeRect(...rect(box));
    }
  }
  const gt = d.gt_boxes[String(f)];
  if ($("show-gt").checked && gt) {
    ctx.strokeStyle = "#7CFC00";
    ctx.lineWidth = 2 * dpr;
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    for (const b of gt) ctx.strokeRect(...rect(b));
    ctx.setLineDash([]);
  }
}

// --- the score curve ------------------------------------------------------------------------

const TOP_BAND = 14;  // CSS px above the plot for incident bars

function curveGeometry() {
  const canvas = $("curve");
  const dpr = fitCanvas(canvas);
  const L = 42 * dpr, R = canvas.width - 10 * dpr, T = (TOP_BAND + 6) * dpr,
        B = canvas.height - 20 * dpr;
  let lo = 0, hi = 1;
  if ($("fit").checked) {
    const shown = page.sources.filter((s) => !s.error && s.frame_scores && page.visible.has(s.name));
    if (shown.length) {
      [lo, hi] = extent(shown.map((s) => s.frame_scores));
      if (hi - lo < 1e-6) { lo -= 0.05; hi += 0.05; }
    }
  }
  const n = Math.max(1, nFrames() - 1);
  return {canvas, dpr, L, R, T, B, lo, hi,
          x: (f) => L + (R - L) * f / n,
          y: (s) => B - (B - T) * (s - lo) / (hi - lo),
          frameAt: (px) => clampFrame((px * dpr - L) / (R - L) * n)};
}

// The curves, intervals, thresholds and incidents are drawn once into an offscreen canvas
// (again only when the size or a setting changes); each frame adds the playhead on top.
function drawCurve(f) {
  const g = curveGeometry();
  const key = [g.canvas.width, g.canvas.height, $("fit").checked, [...page.visible].join("|")].join(";");
  if (!page.curveCache || page.curveKey !== key) {
    page.curveCache = document.createElement("canvas");
    page.curveCache.width = g.canvas.width;
    page.curveCache.height = g.canvas.height;
    drawCurveStatic(page.curveCache.getContext("2d"), g);
    page.curveKey = key;
  }
  const ctx = g.canvas.getContext("2d");
  ctx.clearRect(0, 0, g.canvas.width, g.canvas.height);
  ctx.drawImage(page.curveCache, 0, 0);
  ctx.strokeStyle = "#111";
  ctx.lineWidth = 1.5 * g.dpr;
  ctx.beginPath(); ctx.moveTo(g.x(f), g.T - 2 * g.dpr); ctx.lineTo(g.x(f), g.B); ctx.stroke();
}

// One point per pixel column at most: the highest score of the frames it covers (a peak is
// never lost to the drawing).
function curvePoints(scores, g) {
  const perPixel = Math.max(1, Math.floor(scores.length / Math.max(1, g.R - g.L)));
  const points = [];
  for (let k = 0; k < scores.length; k += perPixel) {
    let top = scores[k];
    for (let j = k + 1; j < Math.min(scores.length, k + perPixel); j += 1) top = Math.max(top, scores[j]);
    points.push([g.x(k), g.y(top)]);
  }
  return points;
}

function drawCurveStatic(ctx, g) {
  const {dpr} = g;
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  ctx.fillStyle = "rgba(220, 40, 40, 0.14)";
  for (const [s, e] of page.detail.intervals) {
    ctx.fillRect(g.x(s), g.T, g.x(Math.min(e, nFrames() - 1)) - g.x(s), g.B - g.T);
  }
  ctx.strokeStyle = "#bbb";
  ctx.lineWidth = 1;
  ctx.fillStyle = "#555";
  ctx.textAlign = "right";
  for (let i = 0; i <= 4; i += 1) {
    const v = g.lo + (g.hi - g.lo) * i / 4;
    ctx.beginPath(); ctx.moveTo(g.L, g.y(v)); ctx.lineTo(g.R, g.y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(2), g.L - 4 * dpr, g.y(v) + 4 * dpr);
  }
  ctx.textAlign = "center";
  const seconds = nFrames() / fps();
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find((s) => seconds / s <= 10) || 1200;
  for (let t = 0; t <= seconds; t += step) {
    ctx.fillText(`${t}s`, g.x(t * fps()), g.B + 14 * dpr);
  }
  page.sources.forEach((src, i) => {
    if (src.error || !page.visible.has(src.name)) return;
    const color = stmil.colors[i % stmil.colors.length];
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5 * dpr;
    if (src.frame_scores) {  // an incidents file has incidents, no curve
      ctx.beginPath();
      curvePoints(src.frame_scores, g).forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    }
    if (src.threshold && src.threshold.value >= g.lo && src.threshold.value <= g.hi) {
      ctx.setLineDash([5 * dpr, 4 * dpr]);
      ctx.beginPath();
      ctx.moveTo(g.L, g.y(src.threshold.value)); ctx.lineTo(g.R, g.y(src.threshold.value));
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.fillStyle = color;
    for (const inc of src.incidents) {
      const y = (2 + 4 * (i % 3)) * dpr;
      ctx.fillRect(g.x(inc.start_frame), y, Math.max(2 * dpr, g.x(inc.end_frame) - g.x(inc.start_frame)), 3 * dpr);
      ctx.beginPath();
      ctx.moveTo(g.x(inc.peak_frame), y + 3 * dpr);
      ctx.lineTo(g.x(inc.peak_frame) - 4 * dpr, g.T - 1);
      ctx.lineTo(g.x(inc.peak_frame) + 4 * dpr, g.T - 1);
      ctx.fill();
    }
  });
}

function incidentAt(px, py) {
  if (py > TOP_BAND + 6) return null;
  const g = curveGeometry();
  for (const src of page.sources) {
    if (src.error || !page.visible.has(src.name)) continue;
    for (const inc of src.incidents) {
      const a = g.x(inc.start_frame) / g.dpr - 4, b = g.x(inc.end_frame) / g.dpr + 4;
      if (px >= a && px <= b) return inc;
    }
  }
  return null;
}

function curvePoint(event) {
  const r = $("curve").getBoundingClientRect();
  return [event.clientX - r.left, event.clientY - r.top];
}

// --- readout, legend, incidents -------------------------------------------------------------

function readout(f) {
  const parts = [`frame ${f} / ${nFrames() - 1}`, `${(f / fps()).toFixed(2)} s`];
  const src = page.sources.find((s) => s.name === page.mapSource && !s.error);
  if (src) parts.push(`clip ${clipIndex(src, f)}`, `score ${src.frame_scores[f].toFixed(4)}`);
  $("readout").textContent = parts.join(" · ");
  $("play").textContent = (hasVideo() ? !video.paused : page.playing) ? "Pause" : "Play";
}

function buildSide() {
  const legend = $("legend"), errors = $("source-errors"), list = $("incidents");
  legend.replaceChildren();
  errors.replaceChildren();
  list.replaceChildren();
  page.sources.forEach((src, i) => {
    const color = stmil.colors[i % stmil.colors.length];
    if (src.error) {
      errors.append(stmil.el("div", {class: "error"}, `${src.name}: ${src.error}`));
      return;
    }
    const box = stmil.el("input", {type: "checkbox", checked: page.visible.has(src.name),
                                   "data-source": src.name});
    box.addEventListener("change", () => {
      if (box.checked) page.visible.add(src.name); else page.visible.delete(src.name);
      box.blur();
      page.dirty = true;
    });
    if (src.warning) errors.append(stmil.el("div", {class: "error"}, `${src.name}: ${src.warning}`));
    const thr = src.threshold ? ` · threshold ${src.threshold.value.toFixed(3)} (${src.threshold.source})` : "";
    legend.append(stmil.el("label", {}, box, stmil.el("i", {style: `background:${color}`}),
      src.name, stmil.el("br"),
      stmil.el("span", {class: "note"}, src.frame_scores ? `peak ${stmil.fmt(src.stats.peak, 3)}${thr}`
        : `incidents file: ${src.incidents.length} for this video`)));
    for (const inc of src.incidents) {
      list.append(stmil.el("button", {type: "button", "data-frame": inc.start_frame, onclick: (e) => {
        pause(); seek(inc.start_frame); e.currentTarget.blur();
      }}, `${src.name} #${inc.id}: frames ${inc.start_frame}–${inc.end_frame}, peak ` +
          `${inc.peak_score.toFixed(3)}`));
    }
  });
  if (!list.childElementCount) list.append(stmil.el("p", {class: "note"}, "No incidents at the runs' thresholds."));
}

// --- the loop and the inputs ----------------------------------------------------------------

function tick(now) {
  if (!hasVideo() && page.playing) {
    const advance = Math.floor((now - page.lastTick) * fps() / 1000);
    if (advance > 0) {
      page.frame = Math.min(nFrames() - 1, page.frame + advance);
      page.lastTick += advance * 1000 / fps();
      if (page.frame >= nFrames() - 1) page.playing = false;
    }
  }
  const f = currentFrame();
  if (f !== page.drawn || page.dirty) {
    drawOverlay(f);
    drawCurve(f);
    readout(f);
    page.drawn = f;
    page.dirty = false;
  }
  requestAnimationFrame(tick);
}

function onKey(e) {
  const t = e.target;
  if (t && (t.tagName === "SELECT" || t.tagName === "TEXTAREA"
            || (t.tagName === "INPUT" && t.type !== "checkbox"))) return;
  const second = Math.max(1, Math.round(fps()));
  const step = e.shiftKey ? second : 1;
  const keys = {
    " ": () => togglePlay(),
    ArrowLeft: () => { pause(); seek(currentFrame() - step); },
    ArrowRight: () => { pause(); seek(currentFrame() + step); },
    Home: () => { pause(); seek(0); },
    End: () => { pause(); seek(nFrames() - 1); },
    m: () => { $("show-map").checked = !$("show-map").checked; },
    b: () => { $("show-pred").checked = !$("show-pred").checked; },
    g: () => { $("show-gt").checked = !$("show-gt").checked; },
  };
  const action = keys[e.key];
  if (!action || e.ctrlKey || e.metaKey || e.altKey) return;
  e.preventDefault();
  action();
  page.dirty = true;
}

function wire() {
  $("play").addEventListener("click", (e) => { togglePlay(); e.currentTarget.blur(); });
  $("prev").addEventListener("click", (e) => { pause(); seek(currentFrame() - 1); e.currentTarget.blur(); });
  $("next").addEventListener("click", (e) => { pause(); seek(currentFrame() + 1); e.currentTarget.blur(); });
  for (const id of ["show-map", "show-pred", "show-gt", "fit", "opacity", "map-source", "scale"]) {
    $(id).addEventListener("input", () => { page.dirty = true; });
    $(id).addEventListener("change", (e) => {
      if (id === "map-source") page.mapSource = e.target.value;
      page.dirty = true;
      e.target.blur();
    });
  }
  const curve = $("curve");
  curve.addEventListener("mousedown", (e) => {
    const [px, py] = curvePoint(e);
    const inc = incidentAt(px, py);
    pause();
    seek(inc ? inc.start_frame : curveGeometry().frameAt(px));
    page.drag = !inc;
  });
  curve.addEventListener("mousemove", (e) => {
    if (page.drag && e.buttons === 1) seek(curveGeometry().frameAt(curvePoint(e)[0]));
  });
  window.addEventListener("mouseup", () => { page.drag = false; });
  window.addEventListener("resize", () => { page.dirty = true; });
  document.addEventListener("keydown", onKey);
  for (const ev of ["seeked", "play", "pause", "loadedmetadata", "loadeddata"]) {
    video.addEventListener(ev, () => { page.dirty = true; });
  }
  video.addEventListener("error", () => {
    stmil.showError(`the browser cannot play ${page.detail.media} (${video.error ? video.error.message || video.error.code : "error"})`);
  });
}

async function main() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const params = new URLSearchParams(location.search);
  $("title").textContent = id;
  document.title = `stmil · ${id}`;
  try {
    const d = await stmil.get(`/api/videos/${encodeURIComponent(id)}`);
    page.detail = d;
    page.sources = d.sources;
    const all = d.sources.filter((s) => !s.error);
    for (const s of all) page.visible.add(s.name);
    const ok = all.filter((s) => s.frame_scores);  // with scores and maps
    const wanted = params.get("source");
    page.mapSource = (ok.find((s) => s.name === wanted) || ok[0] || {}).name || null;
    $("label").textContent = `${stmil.labelText(d.label)}${d.category ? " · " + d.category : ""}` +
      (d.n_frames ? ` · ${d.n_frames} frames at ${stmil.fmt(d.fps, 2)} fps` : "");
    $("map-source").replaceChildren(...ok.map((s) =>
      stmil.el("option", {value: s.name, selected: s.name === page.mapSource}, s.name)));
    if (d.width && d.height) $("stage").style.setProperty("--aspect", String(d.width / d.height));
    if (d.media) {
      video.src = d.media;
    } else {
      video.replaceWith(stmil.el("div", {class: "placeholder", id: "video",
        style: d.width && d.height ? `aspect-ratio: ${d.width} / ${d.height}` : null}));
      $("media-note").textContent = d.media_note;
    }
    if (!ok.length) stmil.showError("No scores for this video: every source failed (see the list).");
    buildSide();
    wire();
    const start = Number(params.get("frame"));
    if (Number.isFinite(start) && start > 0) seek(start);
    page.ready = true;
    requestAnimationFrame(tick);
  } catch (e) {
    stmil.showError(e.message);
  }
}

// For tests and the console: the frame shown, and whether the page has loaded its data.
window.stmilPage = {frame: currentFrame, get ready() { return page.ready; }, seek};
main();
