// The runs page: every run's recorded metrics side by side (one column per run and result),
// with what each metric means, then each run's threshold, calibration and config.
"use strict";

function resultColumns(runs) {
  const cols = [];
  for (const run of runs) {
    if (run.kind !== "run") continue;
    if (!run.results.length) cols.push({run, result: null});
    for (const result of run.results) cols.push({run, result});
  }
  return cols;
}

function headerCell(col) {
  const {run, result} = col;
  const sub = result
    ? `${result.split} · ${result.data} · ${stmil.fmt(result.n_videos)} videos`
    : "no metrics.json (run stmil evaluate)";
  return stmil.el("th", {"data-run": run.name}, run.name, stmil.el("br"),
                  stmil.el("span", {class: "note"}, sub));
}

function bestIndex(values, better) {
  let best = -1;
  values.forEach((v, i) => {
    if (typeof v !== "number") return;
    if (best < 0 || (better === "lower" ? v < values[best] : v > values[best])) best = i;
  });
  return values.filter((v) => v === values[best]).length === values.length && values.length > 1
    ? -1 : best;
}

function metricsTable(data) {
  const table = document.getElementById("metrics");
  const cols = resultColumns(data.runs);
  table.replaceChildren();
  if (!cols.length) {
    table.append(stmil.el("tr", {}, stmil.el("td", {}, "No run folders found here.")));
    return;
  }
  table.append(stmil.el("thead", {}, stmil.el("tr", {}, stmil.el("th", {}, "metric"),
    stmil.el("th", {}, "meaning"), cols.map(headerCell))));
  const body = stmil.el("tbody");
  for (const m of data.metrics) {
    const values = cols.map((c) => (c.result ? c.result.metrics[m.key] : null));
    const best = bestIndex(values, m.better);
    body.append(stmil.el("tr", {"data-key": m.key},
      stmil.el("th", {title: m.key}, m.label),
      stmil.el("td", {class: "meaning"}, m.meaning + (m.better === "lower" ? " (lower is better)" : "")),
      values.map((v, i) => stmil.el("td", {class: i === best ? "num best" : "num"}, stmil.fmt(v, 4)))));
  }
  const thr = cols.map((c) => {
    const t = c.result && c.result.threshold;
    return t ? `${stmil.fmt(t.value, 4)} (${t.source})` : "0.5";
  });
  body.append(stmil.el("tr", {}, stmil.el("th", {}, "threshold"),
    stmil.el("td", {class: "meaning"}, "of the thresholded metrics: the run's calibrated one, else 0.5"),
    thr.map((t) => stmil.el("td", {class: "num"}, t))));
  const inc = cols.map((c) => {
    const i = c.result && c.result.incidents;
    return i ? `${i.found}/${i.events} found, ${i.false} false` : "–";
  });
  body.append(stmil.el("tr", {}, stmil.el("th", {}, "incidents"),
    stmil.el("td", {class: "meaning"}, "events found by an incident / annotated events, and false incidents (needs calibration.json)"),
    inc.map((t) => stmil.el("td", {class: "num"}, t))));
  table.append(body);
}

function runDetails(run) {
  const box = stmil.el("section", {"data-run": run.name});
  box.append(stmil.el("h2", {}, run.name, " ",
    stmil.el("span", {class: "note"}, run.kind === "run" ? "run folder" : `${run.n_scored} scores files`)));
  for (const e of run.errors) box.append(stmil.el("div", {class: "error"}, e));
  if (run.kind !== "run") {
    box.append(stmil.el("p", {class: "muted"}, "stmil score outputs: see the Videos page."));
    return box;
  }
  const t = run.threshold;
  box.append(stmil.el("p", {}, "Threshold: ", t ? `${stmil.fmt(t.value, 4)} (${t.source})` : "–"));
  const c = run.calibration;
  if (c) {
    box.append(stmil.el("p", {class: "muted"},
      `Calibrated (${c.rule} rule) on the ${c.split} split: ${c.n_videos} videos, ` +
      `${stmil.fmt(c.normal_hours * 60, 1)} min of normal video, ${stmil.fmt(c.per_hour, 2)} ` +
      `false incidents/h (target ${stmil.fmt(c.target_per_hour, 2)}/h).`));
  } else {
    box.append(stmil.el("p", {class: "muted"}, "No calibration.json (stmil calibrate makes one)."));
  }
  const lines = Object.entries(run.config).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
  box.append(stmil.el("details", {}, stmil.el("summary", {}, "config.yaml"),
                      stmil.el("pre", {}, lines.join("\n") || "(none)")));
  return box;
}

async function main() {
  try {
    const data = await stmil.get("/api/runs");
    const s = data.summary;
    stmil.setWhere(s);
    const ts = s.test_set;
    document.getElementById("summary").textContent =
      `Folder ${s.name} (${s.kind}); dataset ${s.data ?? "–"}, features ${s.features ?? "–"}; ` +
      `test set: ${ts.videos} videos (${ts.anomalous} anomalous, ${ts.normal} normal).`;
    if (s.dataset_error) stmil.showError(s.dataset_error);
    metricsTable(data);
    document.getElementById("details").replaceChildren(...data.runs.map(runDetails));
  } catch (e) {
    stmil.showError(e.message);
  }
}

main();
