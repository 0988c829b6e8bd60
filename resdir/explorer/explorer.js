// retrspect explorer: neighbours, latent sliders and SAMP, on the archive's
// own services (TAP, SODA, byexample, decode, dimensions).  No build step and
// no other host: plotly.js and samp.js are served by this archive.
import {SERVICE, VALUE_COLUMNS, adqlString, api, el, fixed, format, guarded, link,
  median, sampNotify, sendSpectrum, sent, setStatus, sig, spectra, spectrum, tap, tapURL,
  td, th, tr, withValues} from "./archive.js";

window.retrspectFormat = format;

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
  "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
const SLIDERS = 6;
// ms a slider must rest before the nearest archive spectra are looked up
const NEAREST_AFTER_MS = 300;

// what the tests and the benchmark read: the state, and each slider redraw's
// time from the input event to the finished plot (ms)
const state = window.retrspect = {
  spaces: {}, space: "generic", query: null, rows: [], spectra,
  frame: "observed", region: null, selected: 0, latent: null, moved: null,
  dims: [], timings: [], samp: sent, adql: "",
};

// ---- search -----------------------------------------------------------------

function neighboursADQL(identifier, k) {
  const table = state.spaces[state.space].vector_table;
  return `SELECT TOP ${k} v.obs_id,
  gavo_spectrum_distance(v.latent, ${adqlString(identifier)}) AS dist,
  ${VALUE_COLUMNS}
FROM ${table} AS v
JOIN retrspect.spectra AS s ON s.ssa_pubdid = v.pubdid
LEFT OUTER JOIN retrspect.ml_results AS m ON m.pubdid = v.pubdid
ORDER BY dist`;
}

async function searchById(identifier, k) {
  setStatus(`Finding the ${k} nearest spectra to ${identifier} in ${state.space}…`);
  const started = performance.now();
  const own = await tap(`SELECT s.obs_id, ${VALUE_COLUMNS} FROM retrspect.spectra AS s
    LEFT OUTER JOIN retrspect.ml_results AS m ON m.pubdid = s.ssa_pubdid
    WHERE s.obs_id = ${adqlString(identifier)} OR s.ssa_pubdid = ${adqlString(identifier)}`, 1);
  if (!own.length) throw new Error(`No spectrum ${identifier} in this archive.`);
  state.adql = neighboursADQL(own[0].obs_id, k);
  const rows = await tap(state.adql, k);
  await show(own[0], rows);
  setStatus(`${rows.length} neighbours of ${own[0].obs_id} in ${state.space} ` +
    `(${Math.round(performance.now() - started)} ms).`);
  await setUpSliders(own[0]);
}

async function searchByUpload(file, k) {
  setStatus(`Encoding ${file.name} and searching ${state.space}…`);
  const form = new FormData();
  form.append("UPLOAD", "spectrum,param:f");
  form.append("f", file, file.name);
  form.append("k", String(k));
  form.append("space", state.space);
  const found = await api(SERVICE.byexample, {}, {method: "POST", body: form});
  const [rows, adql] = await withValues(found);
  state.adql = adql;
  await show({obs_id: file.name, upload: true}, rows);
  setStatus(`${rows.length} archive spectra nearest to your upload ${file.name}.`);
  document.getElementById("sliders-section").hidden = true;
}

async function searchByADQL(query) {
  setStatus("Running your query…");
  const rows = await tap(query, 500);
  const section = document.getElementById("browse");
  section.hidden = false;
  const head = section.querySelector("thead"), body = section.querySelector("tbody");
  head.replaceChildren(); body.replaceChildren();
  if (!rows.length) { setStatus("The query returned no rows."); return; }
  const names = Object.keys(rows[0]);
  if (!names.includes("obs_id")) {
    setStatus("The query has no obs_id column: select obs_id to browse its rows.", true);
    return;
  }
  head.append(tr(names.map((n) => th(n)).concat([th("")])));
  for (const row of rows) {
    const go = link(`#id=${encodeURIComponent(row.obs_id)}&space=${state.space}`, "neighbours");
    body.append(tr(names.map((n) => td(cellText(row[n]))).concat([td(go)])));
  }
  setStatus(`${rows.length} rows: pick one to see its neighbours.`);
}

function cellText(value) {
  if (value === null) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : sig(value, 4);
  if (Array.isArray(value)) return `[${value.length} values]`;
  return String(value);
}

// ---- the neighbours: table and plots -----------------------------------------

function exploreLink(obsId) {
  return `#id=${encodeURIComponent(obsId)}&space=${state.space}` +
    `&k=${document.getElementById("k-input").value}`;
}

function linkCell(row) {
  const ssap = `${SERVICE.ssap}?${new URLSearchParams({REQUEST: "queryData", PUBDID: row.ssa_pubdid})}`;
  const splat = el("button", {type: "button", class: "samp-spectrum",
    title: `Send ${row.obs_id} to SPLAT-VO (SAMP)`}, ["→ SPLAT"]);
  splat.addEventListener("click", () => sendSpectrum(row));
  return el("span", {class: "links"}, [
    link(ssap, "SSAP", {title: "its SSAP row"}), " ",
    link(row.datalink, "datalink", {title: "its datalink document"}), " ",
    link(exploreLink(row.obs_id), "neighbours", {class: "own-neighbours",
      title: `the neighbours of ${row.obs_id}`}), " ", splat]);
}

async function show(query, rows) {
  state.query = query; state.rows = rows; state.selected = 0;
  document.getElementById("query-section").hidden = false;
  document.getElementById("neighbours-section").hidden = false;
  document.getElementById("space-label").textContent = `in ${state.space}`;
  document.getElementById("adql-used").textContent = state.adql;
  document.getElementById("query-title").textContent = query.upload
    ? `Your upload ${query.obs_id}` : `${query.obs_id} · ${query.ssa_targname || ""}`;
  const values = document.getElementById("query-values");
  values.replaceChildren();
  if (!query.upload) {
    for (const [term, text] of [["Collection", query.ssa_collection],
      ["Class", format.klass(query)], ["Velocity / z", format.motion(query)],
      ["Catalogue", format.stellar(query)], ["MK type", query.mk_type || "–"]]) {
      values.append(el("dt", {}, [term]), el("dd", {}, [text]));
    }
    document.getElementById("query-links").replaceChildren(linkCell(query));
  }
  const body = document.querySelector("#neighbours tbody");
  body.replaceChildren();
  rows.forEach((row, i) => {
    const show = el("input", {type: "checkbox", "aria-label": `plot ${row.obs_id}`});
    show.checked = i < 6;
    show.addEventListener("change", () => drawPlots());
    const line = tr([td(String(i + 1)), td(show),
      td(el("span", {class: "swatch", style: `background:${COLOURS[i % COLOURS.length]}`}, []), {}),
      td(format.distance(row.dist), {class: "num distance"}),
      td(format.klass(row), {class: "klass"}), td(format.motion(row), {class: "num motion"}),
      td(format.stellar(row), {class: "stellar"}), td(linkCell(row))]);
    line.children[2].append(" ", row.obs_id);
    line.dataset.obsId = row.obs_id;
    line.tabIndex = -1;
    body.append(line);
  });
  highlight(0, false);
  await Promise.all(rows.map(spectrum).concat(query.upload ? [] : [spectrum(query)]));
  drawPlots();
}

// the checked spectra seed a new campaign (campaign.html reads #new=...)
function updateSeedLink() {
  const ids = plotted().map(({row}) => row.obs_id);
  document.getElementById("seed-campaign").href =
    `campaign.html#new=${encodeURIComponent(ids.join(","))}`;
}

function plotted() {
  const checks = [...document.querySelectorAll("#neighbours tbody input[type=checkbox]")];
  return state.rows.map((row, i) => ({row, i})).filter(({i}) => checks[i] && checks[i].checked);
}

function inFrame(row, wave) {
  const z = state.frame === "rest" ? row.redshift : 0;
  if (!z) return wave;
  return wave.map((w) => w / (1 + z));
}

// flux over its median (in [lo, hi] when given): spectra of any flux scale overlay
function normalised(row, lo, hi) {
  const data = spectra.get(row.ssa_pubdid);
  const wave = inFrame(row, data.wave);
  let x = wave, y = data.flux;
  if (lo !== undefined) {
    const keep = wave.map((w) => w >= lo && w <= hi);
    x = wave.filter((_, i) => keep[i]); y = data.flux.filter((_, i) => keep[i]);
  }
  const scale = median(y) || 1;
  return {x, y: y.map((f) => f / scale)};
}

function trace(row, i, lo, hi, highlighted) {
  const {x, y} = normalised(row, lo, hi);
  return {x, y, type: "scattergl", mode: "lines", name: `${i + 1}. ${row.obs_id}`,
    line: {width: highlighted ? 2.2 : 1, color: COLOURS[i % COLOURS.length]},
    opacity: highlighted ? 1 : 0.75,
    hovertemplate: `${row.obs_id}<br>%{x:.1f} Å, %{y:.3f}<extra></extra>`};
}

function axisTitle() {
  return state.frame === "rest" ? "rest wavelength (Å, vacuum)" : "observed wavelength (Å, vacuum)";
}

function drawPlots() {
  const chosen = plotted();
  updateSeedLink();
  const traces = [];
  if (state.query && !state.query.upload && spectra.has(state.query.ssa_pubdid)) {
    const q = trace(state.query, 0, undefined, undefined, true);
    q.name = `query ${state.query.obs_id}`; q.line = {width: 1.6, color: "#111"};
    traces.push(q);
  }
  for (const {row, i} of chosen) {
    if (row.obs_id === state.query.obs_id) continue;       // the query itself, drawn above
    traces.push(trace(row, i, undefined, undefined, i === state.selected));
  }
  const layout = {margin: {l: 55, r: 10, t: 10, b: 45}, hovermode: "closest",
    xaxis: {title: axisTitle()}, yaxis: {title: "flux / median"},
    legend: {orientation: "h", y: -0.25}, uirevision: state.frame};
  if (state.region) layout.xaxis.range = state.region;
  Plotly.react("plot-main", traces, layout, {responsive: true, displaylogo: false});
  followZoom();
  drawRegion();
}

function drawRegion() {
  const target = document.getElementById("plot-region");
  if (!state.region) { target.hidden = true; return; }
  target.hidden = false;
  const [lo, hi] = state.region;
  const traces = plotted().filter(({row}) => row.obs_id !== state.query.obs_id)
    .map(({row, i}) => trace(row, i, lo, hi, i === state.selected));
  if (state.query && !state.query.upload) {
    const q = trace(state.query, 0, lo, hi, true);
    q.name = `query ${state.query.obs_id}`; q.line = {width: 1.6, color: "#111"};
    traces.unshift(q);
  }
  Plotly.react(target, traces, {margin: {l: 55, r: 10, t: 24, b: 40},
    title: {text: `${fixed(lo, 0)}–${fixed(hi, 0)} Å, each over its median there`, font: {size: 12}},
    xaxis: {title: axisTitle()}, yaxis: {title: "flux / median in region"}, showlegend: false},
  {responsive: true, displaylogo: false});
}

function setRegion(lo, hi) {
  if (!(isFinite(lo) && isFinite(hi) && hi > lo)) { state.region = null; drawPlots(); return; }
  state.region = [lo, hi];
  document.getElementById("region-lo").value = lo.toFixed(1);
  document.getElementById("region-hi").value = hi.toFixed(1);
  drawPlots();
}

function highlight(index, focus = true) {
  const rows = [...document.querySelectorAll("#neighbours tbody tr")];
  if (!rows.length) return;
  state.selected = Math.max(0, Math.min(rows.length - 1, index));
  rows.forEach((row, i) => row.classList.toggle("selected", i === state.selected));
  if (focus) rows[state.selected].focus();
}

// ---- latent sliders ---------------------------------------------------------

async function setUpSliders(query) {
  const section = document.getElementById("sliders-section");
  const space = state.spaces[state.space];
  let dims;
  try { dims = await api(SERVICE.dimensions, {space: state.space}); }
  catch (err) { section.hidden = true; return; }
  const latent = await tap(`SELECT latent FROM ${space.vector_table}
    WHERE obs_id = ${adqlString(query.obs_id)}`, 1);
  const hasDecoder = await decode(latent.length ? latent[0].latent : null).then(() => true, () => false);
  if (!latent.length || !hasDecoder) { section.hidden = true; return; }
  state.latent = latent[0].latent.slice(); state.moved = state.latent.slice();
  state.dims = dims.slice(0, SLIDERS);
  const form = document.getElementById("sliders");
  form.replaceChildren();
  for (const d of state.dims) {
    const value = state.latent[d.dim];
    const lo = Math.min(d.low, value), hi = Math.max(d.high, value);
    const id = `slider-z${d.dim}`;
    const input = el("input", {type: "range", id, min: lo, max: hi,
      step: (hi - lo) / 400, "data-dim": d.dim});
    input.value = value;
    const output = el("output", {for: id}, [sig(value, 3)]);
    const bits = d.information === null ? `spread ${sig(d.spread, 2)}` : `${sig(d.information, 2)} bits`;
    form.append(el("label", {for: id}, [`z${d.dim}`, el("small", {}, [` ${bits}`])]), input, output);
    input.addEventListener("input", (event) => {
      state.moved[d.dim] = +input.value;
      output.textContent = sig(+input.value, 3);
      redrawDecoded(event.timeStamp);
    });
    // a drag ends in one change event, but each arrow key fires one: wait
    // until the slider rests before asking for the nearest spectra
    input.addEventListener("change", () => {
      clearTimeout(state.nearestTimer);
      state.nearestTimer = setTimeout(guarded(nearestToSliders), NEAREST_AFTER_MS);
    });
  }
  const reset = el("button", {type: "button"}, ["Back to the spectrum"]);
  reset.addEventListener("click", () => setUpSliders(query));
  form.append(reset);
  section.hidden = false;
  state.reference = await decode(state.latent);
  await redrawDecoded(performance.now());
  await nearestToSliders();
}

async function decode(latent) {
  if (!latent) throw new Error("no latent vector");
  const rows = await api(SERVICE.decode, {space: state.space, latent: `[${latent.join(",")}]`});
  return {x: rows.map((r) => r.wavelength), y: rows.map((r) => r.flux)};
}

// One decode request at a time, for the latest slider position: moves made
// while one is out are folded into the next, so a fast drag never queues
// requests at the server.  Each redraw is timed from the earliest input
// event it answers to the finished plot.
let decoding = false, waitingSince = null;
function redrawDecoded(since) {
  if (waitingSince === null) waitingSince = since;
  if (!decoding) return pumpDecoded();
}

async function pumpDecoded() {
  decoding = true;
  try {
    while (waitingSince !== null) {
      const since = waitingSince;
      waitingSince = null;
      const vector = state.moved.slice();
      const decoded = await decode(vector);
      const frame = state.spaces[state.space].frame;
      await Plotly.react("plot-decoded", [
        {x: state.reference.x, y: state.reference.y, name: "decoded spectrum",
          type: "scatter", mode: "lines", line: {color: "#aaa", width: 1}},
        {x: decoded.x, y: decoded.y, name: "moved", type: "scatter", mode: "lines",
          line: {color: "#111", width: 1.2}, meta: {latent: vector}}],
      {margin: {l: 55, r: 10, t: 10, b: 45}, uirevision: "decoded",
        xaxis: {title: `${frame} wavelength (Å, vacuum)`}, yaxis: {title: "normalised flux"},
        legend: {orientation: "h", y: -0.3}}, {responsive: true, displaylogo: false});
      const elapsed = performance.now() - since;
      state.timings.push(elapsed);
      document.getElementById("decode-timing").textContent =
        `Decoded and redrawn in ${Math.round(elapsed)} ms.`;
    }
  } finally {
    decoding = false;
  }
}

async function nearestToSliders() {
  const found = await api(SERVICE.byexample,
    {latent: `[${state.moved.join(",")}]`, k: "5", space: state.space});
  const [rows] = await withValues(found);
  const body = document.querySelector("#slider-neighbours tbody");
  body.replaceChildren(...rows.map((r, i) => tr([td(String(i + 1)),
    td(link(exploreLink(r.obs_id), r.obs_id)), td(format.distance(r.dist), {class: "num"}),
    td(format.klass(r)), td(format.motion(r), {class: "num"}), td(format.stellar(r))])));
}

// ---- SAMP (DaCHS's samp.js, web profile) ----------------------------------

function sendTable() {
  if (!state.adql) return;
  sampNotify("table.load.votable", {url: tapURL(state.adql),
    name: `neighbours of ${state.query.obs_id} (${state.space})`});
}

// ---- wiring -------------------------------------------------------------------

async function loadSpaces() {
  const rows = await tap("SELECT space_name, vector_table, dimension, frame, wave_min, " +
    "wave_max, n_vectors FROM retrspect.spaces ORDER BY space_name");
  const select = document.getElementById("space-select");
  for (const row of rows) {
    state.spaces[row.space_name] = row;
    select.append(el("option", {value: row.space_name},
      [`${row.space_name} (${row.dimension}-d, ${fixed(row.wave_min, 0)}–${fixed(row.wave_max, 0)} Å ${row.frame})`]));
  }
  select.value = state.space;
}

function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.get("id")) return;
  if (params.get("space") && state.spaces[params.get("space")]) state.space = params.get("space");
  document.getElementById("space-select").value = state.space;
  document.getElementById("id-input").value = params.get("id");
  if (params.get("k")) document.getElementById("k-input").value = params.get("k");
  guarded(searchById)(params.get("id"), kValue());
}

function kValue() {
  const k = Math.round(+document.getElementById("k-input").value);
  return Math.max(1, Math.min(100, isFinite(k) ? k : 10));
}

function wire() {
  document.getElementById("by-id").addEventListener("submit", (event) => {
    event.preventDefault();
    state.space = document.getElementById("space-select").value;
    const id = document.getElementById("id-input").value.trim();
    const next = `#id=${encodeURIComponent(id)}&space=${state.space}&k=${kValue()}`;
    if (location.hash === next) fromHash(); else location.hash = next;
  });
  document.getElementById("by-upload").addEventListener("submit", (event) => {
    event.preventDefault();
    state.space = document.getElementById("space-select").value;
    guarded(searchByUpload)(document.getElementById("upload-input").files[0], kValue());
  });
  document.getElementById("by-adql").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(searchByADQL)(document.getElementById("adql-input").value);
  });
  for (const radio of document.querySelectorAll("input[name=frame]")) {
    radio.addEventListener("change", () => { state.frame = radio.value; state.region = null; drawPlots(); });
  }
  document.getElementById("region-show").addEventListener("click", () => setRegion(
    +document.getElementById("region-lo").value, +document.getElementById("region-hi").value));
  document.getElementById("region-preset").addEventListener("change", (event) => {
    const [lo, hi] = event.target.value.split(",").map(Number);
    if (hi) setRegion(lo, hi);
  });
  document.getElementById("samp-table").addEventListener("click", sendTable);
  window.addEventListener("hashchange", fromHash);
  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
    if (event.key === "/" && !typing) { event.preventDefault(); document.getElementById("id-input").focus(); }
    if (typing || !state.rows.length) return;
    if (event.key === "j") { highlight(state.selected + 1); drawPlots(); }
    if (event.key === "k") { highlight(state.selected - 1); drawPlots(); }
    if (event.key === "r") {
      const next = state.frame === "rest" ? "observed" : "rest";
      document.querySelector(`input[name=frame][value=${next}]`).click();
    }
    if (event.key === "Enter" && event.target.closest && event.target.closest("#neighbours tbody tr")) {
      location.hash = exploreLink(state.rows[state.selected].obs_id);
    }
  });
}

// zooming the main plot picks the region shown below it (the handler is
// attached once the plot exists, drawn when its section is visible)
function followZoom() {
  const main = document.getElementById("plot-main");
  if (main.dataset.followsZoom) return;
  main.dataset.followsZoom = "yes";
  main.on("plotly_relayout", (change) => {
    if ("xaxis.range[0]" in change) {
      state.region = [change["xaxis.range[0]"], change["xaxis.range[1]"]];
      document.getElementById("region-lo").value = state.region[0].toFixed(1);
      document.getElementById("region-hi").value = state.region[1].toFixed(1);
      drawRegion();
    } else if (change["xaxis.autorange"]) {
      state.region = null; drawRegion();
    }
  });
}

async function main() {
  wire();
  await loadSpaces();
  fromHash();
}
guarded(main)();
