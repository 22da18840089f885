// The videos page: every test video (normal ones too) with one source's per-video numbers,
// sortable by any column.
"use strict";

const COLUMNS = [
  {key: "id", label: "video", get: (v) => v.id},
  {key: "label", label: "label", get: (v) => v.label},
  {key: "category", label: "category", get: (v) => v.category},
  {key: "peak", label: "peak", stat: true},
  {key: "ap", label: "AP", stat: true},
  {key: "events", label: "events", stat: true},
  {key: "missed", label: "missed", stat: true},
  {key: "incidents", label: "incidents", stat: true},
  {key: "false", label: "false", stat: true},
];
const state = {data: null, source: null, sort: "id", dir: 1};

function value(video, col) {
  if (!col.stat) return col.get(video);
  const s = video.sources[state.source];
  return s && !s.error ? s[col.key] : null;
}

function compare(a, b) {
  const col = COLUMNS.find((c) => c.key === state.sort);
  const x = value(a, col), y = value(b, col);
  if (x === y) return a.id < b.id ? -1 : 1;
  if (x === null || x === undefined) return 1;   // missing values last, either direction
  if (y === null || y === undefined) return -1;
  return (x < y ? -1 : 1) * state.dir;
}

function render() {
  const table = document.getElementById("videos");
  const head = stmil.el("tr", {}, COLUMNS.map((c) => stmil.el("th", {
    "data-key": c.key,
    "aria-sort": c.key === state.sort ? (state.dir > 0 ? "ascending" : "descending") : null,
    onclick: () => {
      state.dir = state.sort === c.key ? -state.dir : (c.stat ? -1 : 1);
      state.sort = c.key;
      render();
    }}, c.label)));
  const rows = [...state.data.videos].sort(compare).map((v) => {
    const s = v.sources[state.source];
    const cells = COLUMNS.map((c) => {
      if (c.key === "id") {
        return stmil.el("td", {}, stmil.el("a", {href: `/video/${encodeURIComponent(v.id)}?source=${encodeURIComponent(state.source || "")}`}, v.id));
      }
      if (c.key === "label") {
        return stmil.el("td", {class: `label-${v.label}`}, stmil.labelText(v.label));
      }
      if (!c.stat) return stmil.el("td", {}, value(v, c));
      if (s && s.error) return stmil.el("td", {class: "num", title: s.error}, "error");
      return stmil.el("td", {class: "num"}, stmil.fmt(value(v, c), 4));
    });
    return stmil.el("tr", {"data-video": v.id}, cells);
  });
  table.replaceChildren(stmil.el("thead", {}, head), stmil.el("tbody", {}, rows));
  // a source that cannot be read (a malformed scores or incidents file) says why at the top
  const failed = state.data.videos.map((v) => v.sources[state.source]).find((s) => s && s.error);
  stmil.showError(failed ? `${state.source}: ${failed.error}` : (state.data.dataset_error || ""));
}

async function main() {
  try {
    state.data = await stmil.get("/api/videos");
    stmil.setWhere(state.data.summary);
    if (state.data.dataset_error) stmil.showError(state.data.dataset_error);
    const select = document.getElementById("source");
    const params = new URLSearchParams(location.search);
    state.source = params.get("source") || state.data.sources[0] || null;
    select.replaceChildren(...state.data.sources.map((name) =>
      stmil.el("option", {value: name, selected: name === state.source}, name)));
    select.addEventListener("change", () => { state.source = select.value; render(); });
    render();
  } catch (e) {
    stmil.showError(e.message);
  }
}

main();
