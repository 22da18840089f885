// The live page of stmil watch --serve: the newest scored frame with its heat map and box,
// the clip scores of the last minutes and the incident lines, pushed by server-sent events.
// A dropped connection to the server is retried by the browser (EventSource), resuming after
// the last change it saw; a camera that drops only shows as a pause and a new connection.
"use strict";

const $ = (id) => document.getElementById(id);
const live = {minutes: 5, threshold: null, latest: null, scores: [], lines: 0, clips: 0,
              ready: false, ended: false, seq: 0};

function drawOverlay() {
  const canvas = $("overlay");
  const dpr = stmil.fitCanvas(canvas);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const d = live.latest;
  if (!d) return;
  const sx = canvas.width / d.width, sy = canvas.height / d.height;
  const rect = (b) => [b[0] * sx, b[1] * sy, (b[2] - b[0]) * sx, (b[3] - b[1]) * sy];
  if ($("show-map").checked) {
    const opacity = Number($("opacity").value);
    d.cells.forEach((cell, i) => {
      ctx.fillStyle = stmil.heat(d.map[i], opacity);
      ctx.fillRect(...rect(cell));
    });
  }
  if ($("show-pred").checked) {
    ctx.strokeStyle = "#00e5ff";
    ctx.lineWidth = 2 * dpr;
    ctx.strokeRect(...rect(d.box));
  }
}

// x: seconds before the newest clip (server time), over what has been seen (at least 30 s,
// at most the last `minutes`); y: 0 to 1.
function drawCurve() {
  const canvas = $("live-curve");
  const dpr = stmil.fitCanvas(canvas);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const L = 42 * dpr, R = canvas.width - 10 * dpr, T = 8 * dpr, B = canvas.height - 20 * dpr;
  const now = live.scores.length ? live.scores[live.scores.length - 1].time : 0;
  const seen = live.scores.length ? now - live.scores[0].time : 0;
  const span = Math.min(live.minutes * 60, Math.max(30, seen));
  const x = (t) => R - (R - L) * (now - t) / span;
  const y = (s) => B - (B - T) * Math.max(0, Math.min(1, s));
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  ctx.strokeStyle = "#bbb"; ctx.fillStyle = "#555"; ctx.lineWidth = 1; ctx.textAlign = "right";
  for (let i = 0; i <= 4; i += 1) {
    ctx.beginPath(); ctx.moveTo(L, y(i / 4)); ctx.lineTo(R, y(i / 4)); ctx.stroke();
    ctx.fillText((i / 4).toFixed(2), L - 4 * dpr, y(i / 4) + 4 * dpr);
  }
  ctx.textAlign = "center";
  const step = [10, 30, 60].find((s) => span / s <= 6) || 60;
  for (let t = 0; t <= span + 1e-6; t += step) {
    const label = t === 0 ? "now" : t % 60 ? `-${t} s` : `-${t / 60} min`;
    ctx.fillText(label, x(now - t), B + 14 * dpr);
  }
  if (live.threshold !== null) {
    ctx.setLineDash([5 * dpr, 4 * dpr]); ctx.strokeStyle = "#c92a2a";
    ctx.beginPath(); ctx.moveTo(L, y(live.threshold)); ctx.lineTo(R, y(live.threshold)); ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.strokeStyle = "#999";
  live.scores.forEach((p, k) => {
    if (k && p.connection !== live.scores[k - 1].connection) {
      ctx.beginPath(); ctx.moveTo(x(p.time), T); ctx.lineTo(x(p.time), B); ctx.stroke();
    }
  });
  ctx.strokeStyle = stmil.colors[0]; ctx.lineWidth = 1.5 * dpr;
  ctx.beginPath();
  live.scores.forEach((p, k) => (k ? ctx.lineTo(x(p.time), y(p.score)) : ctx.moveTo(x(p.time), y(p.score))));
  ctx.stroke();
}

function status() {
  const d = live.latest;
  if (live.ended) { $("status").textContent = "the watch has ended"; return; }
  if (!d) return;
  const ago = Math.max(0, Date.now() / 1000 - d.time);
  $("status").className = ago > 10 ? "readout status-lost" : "readout";
  $("status").textContent = [`connection ${d.connection}`, `clip frames ${d.start}–${d.end}`,
    `score ${d.score.toFixed(3)}`, `${live.clips} clips seen`,
    ago > 10 ? `no clip for ${Math.round(ago)} s (camera lost? the watch reconnects)` : "live"].join(" · ");
}

function lineText(d) {
  const when = d.wall_time ? d.wall_time.slice(11, 19) : "";
  const frames = d.type === "start" ? `from frame ${d.start_frame}`
    : `frames ${d.start_frame}–${d.end_frame}`;
  const why = d.reason ? ` (${d.reason})` : "";
  return `#${d.id} ${d.type}${why} · ${when} · ${frames} · peak ${Number(d.peak_score).toFixed(3)}`;
}

function addLine(d) {
  live.lines += 1;
  const item = stmil.el("li", {"data-type": d.type, "data-id": d.id}, lineText(d));
  $("feed").prepend(item);
}

function addClip(d, seq) {
  live.latest = d;
  live.clips += 1;
  live.scores.push({time: d.time, score: d.score, start: d.start, connection: d.connection});
  while (live.scores.length && live.scores[0].time < d.time - live.minutes * 60) live.scores.shift();
  $("frame").src = `/api/live/frame.jpg?seq=${seq}`;
  drawCurve();
  status();
}

function listen() {
  const events = new EventSource(`/api/live/events?since=${live.seq}`);
  events.addEventListener("clip", (e) => addClip(JSON.parse(e.data), e.lastEventId));
  events.addEventListener("line", (e) => addLine(JSON.parse(e.data)));
  events.addEventListener("closed", () => { live.ended = true; status(); events.close(); });
  events.addEventListener("open", () => stmil.showError(""));
  events.addEventListener("error", () => {
    if (!live.ended) stmil.showError("lost the server; retrying…");
  });
}

async function main() {
  try {
    const s = await stmil.get("/api/live/state");
    live.minutes = s.minutes;
    live.threshold = s.threshold;
    live.seq = s.seq;
    live.ended = s.closed;
    $("source").textContent = s.source;
    $("minutes").textContent = String(s.minutes);
    document.title = `stmil · live · ${s.source}`;
    live.scores = s.scores;
    live.clips = s.scores.length;
    for (const d of s.lines) addLine(d);
    $("frame").addEventListener("load", drawOverlay);
    if (s.latest) {
      live.latest = s.latest;
      $("frame").src = `/api/live/frame.jpg?seq=${s.seq}`;
    }
    drawCurve();
    status();
    for (const id of ["show-map", "opacity", "show-pred"]) $(id).addEventListener("input", drawOverlay);
    window.addEventListener("resize", () => { drawOverlay(); drawCurve(); });
    setInterval(status, 1000);
    if (!s.closed) listen();
    live.ready = true;
  } catch (e) {
    stmil.showError(e.message);
  }
}

// For tests and the console.
window.stmilLive = {get ready() { return live.ready; }, get clips() { return live.clips; },
                    get lines() { return live.lines; }, get latest() { return live.latest; }};
main();
