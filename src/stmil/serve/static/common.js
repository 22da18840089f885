// stmil serve: helpers shared by the three pages. Every text from the server is set with
// textContent (never innerHTML), so a file's contents cannot inject markup.
"use strict";

const stmil = {
  // GET a JSON route; throws an Error carrying the server's one-line message.
  async get(url) {
    const r = await fetch(url);
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) throw new Error((body && body.error) || `${url}: HTTP ${r.status}`);
    return body;
  },
  // Build an element: el("td", {class: "num"}, "0.93").
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "style") node.style.cssText = v;  // CSSOM: allowed by the page's CSP
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  },
  fmt(x, digits = 3) {
    if (x === null || x === undefined) return "–";
    return typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(digits)) : String(x);
  },
  showError(message) {
    const box = document.getElementById("error");
    if (box) box.textContent = message;
  },
  setWhere(summary) {
    const where = document.getElementById("where");
    if (where && summary) where.textContent = `${summary.name} (${summary.kind})`;
  },
  // Distinct colours for the sources, in order.
  colors: ["#0b62c4", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad", "#5c940d",
           "#e67700"],
  labelText(label) { return label === 1 ? "anomalous" : label === 0 ? "normal" : "?"; },
  // A heat-map colour for score s in [0, 1]: blue (0) to red (1), more opaque when hotter.
  heat(s, opacity) {
    const v = Math.max(0, Math.min(1, s));
    return `hsla(${Math.round(240 * (1 - v))}, 100%, 50%, ${opacity * (0.2 + 0.8 * v)})`;
  },
  // Size a canvas's pixels to its CSS box; returns the device pixel ratio.
  fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    return dpr;
  },
};
