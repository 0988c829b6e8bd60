// retrspect campaigns: label spectra by key, retrain, watch the progress.
// Reads through TAP (the campaign tables are public); writes through the
// campaign services, which DaCHS limits to its group "campaigners" (HTTP
// basic authentication with the DaCHS account).  A label is written with an
// identifier made here, so a request re-sent after a failure is stored once.
import {SERVICE, VALUE_COLUMNS, adqlString, api, asRows, el, fixed, format, guarded, median,
  sampNotify, sent, setStatus, sig, spectrum, tap, tapURL, td, tr} from "./archive.js";

const AUTH_KEY = "retrspect-auth";
const RETRIES = 3;
const state = window.retrspectCampaign = {
  user: null, campaign: null, batch: [], index: 0, mine: new Map(), others: new Map(),
  written: [], samp: sent,
};

// ---- writing, authenticated ---------------------------------------------------

function credentials() {
  const stored = sessionStorage.getItem(AUTH_KEY);
  return stored ? JSON.parse(stored) : null;
}

async function write(service, params) {
  const login = credentials();
  if (!login) throw new Error("Log in first: writing needs a DaCHS account in the group campaigners.");
  const body = new URLSearchParams({...params, RESPONSEFORMAT: "json"});
  const headers = {Authorization: "Basic " + btoa(`${login.user}:${login.password}`)};
  let lastError = null;
  for (let attempt = 0; attempt < RETRIES; attempt++) {
    let response;
    try {
      response = await fetch(service, {method: "POST", body, headers});
    } catch (err) {                  // the network failed: the same request again
      lastError = err;
      continue;
    }
    if (response.status === 401) throw new Error(`${login.user} may not write here (wrong password, or not in the group campaigners).`);
    return asRows(response);
  }
  throw new Error(`Not stored (${lastError}); nothing was lost: label it again.`);
}

// ---- reading ------------------------------------------------------------------

async function loadCampaigns() {
  const rows = await tap("SELECT campaign_id, target_class, iteration, created_by " +
    "FROM retrspect.campaigns ORDER BY created DESC");
  const select = document.getElementById("campaign-select");
  select.replaceChildren(...rows.map((r) => el("option", {value: r.campaign_id},
    [`${r.campaign_id}: ${r.target_class || "?"} (iteration ${r.iteration}, by ${r.created_by})`])));
  const spaces = await tap("SELECT space_name FROM retrspect.spaces ORDER BY space_name");
  document.getElementById("new-spaces").replaceChildren(...spaces.map((s) => el("label", {},
    [el("input", {type: "checkbox", value: s.space_name,
      ...(s.space_name === "generic" ? {checked: ""} : {})}), ` ${s.space_name} `])));
}

async function openCampaign(id) {
  const found = await tap(`SELECT * FROM retrspect.campaigns WHERE campaign_id = ${adqlString(id)}`);
  if (!found.length) throw new Error(`No campaign ${id}.`);
  const campaign = state.campaign = found[0];
  state.batch = await tap(`SELECT b.obs_id, b.set_name, b.score, ${VALUE_COLUMNS}
FROM retrspect.campaign_batches AS b
JOIN retrspect.spectra AS s ON s.obs_id = b.obs_id
LEFT OUTER JOIN retrspect.ml_results AS m ON m.pubdid = s.ssa_pubdid
WHERE b.campaign_id = ${adqlString(id)} AND b.iteration = ${campaign.iteration}
ORDER BY b.batch_position`);
  await loadLabels();
  const firstOpen = state.batch.findIndex((row) => !state.mine.has(row.obs_id));
  state.index = firstOpen < 0 ? 0 : firstOpen;
  document.getElementById("campaign").hidden = false;
  document.getElementById("campaign-title").textContent =
    `${campaign.campaign_id}: ${campaign.target_class || ""} · iteration ${campaign.iteration}`;
  document.getElementById("campaign-about").textContent =
    `Spaces ${campaign.spaces}; ${campaign.batch_size} spectra an iteration ` +
    `(uncertain, random, candidates); model ${campaign.model_version || "none yet (seeds only)"}; ` +
    `created by ${campaign.created_by}.`;
  const labelsQuery = `SELECT * FROM retrspect.labels WHERE campaign_id = ${adqlString(id)} ` +
    "ORDER BY labelled_at";
  document.getElementById("labels-votable").href = tapURL(labelsQuery, "votable");
  document.getElementById("labels-csv").href = tapURL(labelsQuery, "csv");
  await renderItem();
  await renderProgress();
}

async function loadLabels() {
  const rows = await tap(`SELECT obs_id, label, labeller FROM retrspect.labels
WHERE campaign_id = ${adqlString(state.campaign.campaign_id)} ORDER BY labelled_at, label_id`, 100000);
  state.mine = new Map(); state.others = new Map();
  for (const row of rows) {
    if (row.labeller === state.user) state.mine.set(row.obs_id, row.label);
    else {
      const by = state.others.get(row.obs_id) || new Map();
      by.set(row.labeller, row.label);
      state.others.set(row.obs_id, by);
    }
  }
}

// ---- one spectrum at a time -----------------------------------------------------

function restFrame(row, wave) {
  return row.redshift ? wave.map((w) => w / (1 + row.redshift)) : wave;
}

async function renderItem() {
  const row = state.batch[state.index];
  if (!row) { setStatus("This iteration shows nothing new: start the next one."); return; }
  document.getElementById("item-position").textContent = `${state.index + 1} / ${state.batch.length}`;
  document.getElementById("item-set").textContent = row.set_name;
  document.getElementById("item-name").textContent = `${row.obs_id} · ${row.ssa_targname || ""}`;
  document.getElementById("item-values").textContent =
    `${format.klass(row)} · ${format.motion(row)} · ${format.stellar(row)}` +
    (row.score === null ? "" : ` · score ${sig(row.score, 3)}`);
  const others = [...(state.others.get(row.obs_id) || new Map())].map(([who, l]) => `${who}: ${l}`);
  const mine = state.mine.get(row.obs_id);
  document.getElementById("item-labels").textContent =
    (mine ? `Your label: ${mine}. ` : "Not labelled by you yet. ") +
    (others.length ? `Others: ${others.join(", ")}` +
      (new Set([mine, ...state.others.get(row.obs_id).values()].filter(Boolean)).size > 1
        ? " (they disagree: all labels are kept; the majority trains)." : ".") : "");
  for (const button of document.querySelectorAll(".label-keys button[data-label]")) {
    button.classList.toggle("given", button.dataset.label === mine);
  }
  const data = await spectrum(row);
  if (state.batch[state.index] !== row) return;      // moved on meanwhile
  const scale = median(data.flux) || 1;
  const config = {responsive: true, displaylogo: false};
  Plotly.react("plot-full", [{x: data.wave, y: data.flux.map((f) => f / scale), type: "scattergl",
    mode: "lines", line: {width: 1, color: "#111"}}], {margin: {l: 45, r: 8, t: 8, b: 38},
    xaxis: {title: "observed wavelength (Å)"}, yaxis: {title: "flux / median"}}, config);
  const lo = state.campaign.zoom_min, hi = state.campaign.zoom_max;
  const zoom = document.getElementById("plot-zoom");
  if (lo !== null && hi !== null) {
    const wave = restFrame(row, data.wave);
    const keep = wave.map((w) => w >= lo && w <= hi);
    const y = data.flux.filter((_, i) => keep[i]);
    const local = median(y) || 1;
    Plotly.react(zoom, [{x: wave.filter((_, i) => keep[i]), y: y.map((f) => f / local),
      type: "scatter", mode: "lines", line: {width: 1.2, color: "#1f5fa8"}}],
    {margin: {l: 45, r: 8, t: 40, b: 38}, title: {x: 0.01, xanchor: "left", text: `${fixed(lo, 0)}–${fixed(hi, 0)} Å, rest frame`,
      font: {size: 12}}, xaxis: {title: "rest wavelength (Å)"}, yaxis: {title: "flux / median"}}, config);
  }
  if (state.batch[state.index + 1]) spectrum(state.batch[state.index + 1]);    // ahead
}

// one label in flight at a time: a double click or a held key neither stores
// twice nor skips a spectrum; the next key is taken as soon as the label is
// stored (drawing the next spectrum does not hold it up)
let labelling = false;
async function giveLabel(label) {
  const row = state.batch[state.index];
  if (!row || labelling) return;
  labelling = true;
  const labelId = `l-${crypto.randomUUID()}`;
  try {
    setStatus(`Storing ${label} for ${row.obs_id}…`);
    await write(SERVICE.campaignLabel, {campaign_id: state.campaign.campaign_id,
      obs_id: row.obs_id, label, label_id: labelId});
    state.mine.set(row.obs_id, label);
    if (state.index < state.batch.length - 1) state.index += 1;
  } finally {
    labelling = false;
  }
  state.written.push(labelId);
  setStatus(`${row.obs_id}: ${label} (stored).`);
  await renderItem();
  await renderProgress();
}

async function back() {
  state.index = Math.max(0, state.index - 1);
  await renderItem();
}

async function nextIteration() {
  setStatus("Retraining on every label and scoring the archive…");
  const [campaign] = await write(SERVICE.campaignNext, {campaign_id: state.campaign.campaign_id,
    from_iteration: String(state.campaign.iteration)});
  await openCampaign(campaign.campaign_id);
  setStatus(`Iteration ${campaign.iteration}: model ${campaign.model_version || "(seeds only)"}.`);
}

// ---- progress, with honest uncertainty ----------------------------------------------

async function renderProgress() {
  const rows = await api(SERVICE.campaignProgress, {campaign_id: state.campaign.campaign_id});
  document.querySelector("#progress tbody").replaceChildren(...rows.map((r) => tr([
    td(String(r.iteration)), td(String(r.shown)), td(String(r.labelled)),
    td(String(r.confirmed)), td(r.random_n ? `${r.random_yes} / ${r.random_n}` : "–"),
    td(r.random_n ? `${sig(100 * r.random_low, 2)}–${sig(100 * r.random_high, 2)} %` : "–")])));
  const confirmed = rows.reduce((n, r) => n + r.confirmed, 0);
  const randomN = rows.reduce((n, r) => n + r.random_n, 0);
  const randomYes = rows.reduce((n, r) => n + r.random_yes, 0);
  document.getElementById("progress-note").textContent =
    `${confirmed} members confirmed so far. The random sets (${randomN} labelled, ` +
    `${randomYes} members) are the only unbiased estimate of how common the class is; ` +
    "a random set of 20 mostly holds no member of a rare class, which says only that " +
    "the class is rarer than the interval's upper end.";
}

function sendCandidates() {
  const c = state.campaign;
  if (!c.model_version) { setStatus("No model yet: label, then start the next iteration.", true); return; }
  sampNotify("table.load.votable", {name: `${c.campaign_id} candidates (model ${c.model_version})`,
    url: tapURL(`SELECT TOP 200 c.obs_id, c.score, s.ssa_targname, s.ssa_collection, s.accref,
  s.ssa_pubdid FROM retrspect.campaign_scores AS c JOIN retrspect.spectra AS s ON s.obs_id = c.obs_id
WHERE c.campaign_id = ${adqlString(c.campaign_id)} AND c.model_version = ${adqlString(c.model_version)}
ORDER BY c.score DESC`)});
}

// ---- creating ---------------------------------------------------------------------

function ids(text) { return text.split(/[\s,]+/).filter(Boolean); }

async function create() {
  const spaces = [...document.querySelectorAll("#new-spaces input:checked")].map((i) => i.value);
  const params = {campaign_id: document.getElementById("new-id").value.trim(),
    target_class: document.getElementById("new-target").value,
    spaces: spaces.join(","), seeds: ids(document.getElementById("new-seeds").value).join(","),
    batch_size: document.getElementById("new-batch").value};
  const lo = document.getElementById("new-zoom-lo").value, hi = document.getElementById("new-zoom-hi").value;
  if (lo && hi) Object.assign(params, {zoom_min: lo, zoom_max: hi});
  setStatus("Creating the campaign and choosing its first batch…");
  const [campaign] = await write(SERVICE.campaignCreate, params);
  location.hash = `campaign=${encodeURIComponent(campaign.campaign_id)}`;
}

async function seedsFromADQL() {
  const rows = await tap(document.getElementById("new-seed-adql").value, 500);
  if (rows.length && !("obs_id" in rows[0])) throw new Error("The query has no obs_id column.");
  document.getElementById("new-seeds").value = rows.map((r) => r.obs_id).join(", ");
  setStatus(`${rows.length} seeds from the query.`);
}

// ---- wiring -------------------------------------------------------------------------

function showLogin() {
  const login = credentials();
  state.user = login ? login.user : null;
  document.getElementById("who").textContent = login
    ? `Logged in as ${login.user} (checked when you write).`
    : "Reading needs no account; labelling needs a DaCHS user in the group campaigners.";
}

function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("campaign")) guarded(openCampaign)(params.get("campaign"));
  if (params.get("new")) {           // seeds handed over by the explorer
    document.getElementById("new-campaign").open = true;
    document.getElementById("new-seeds").value = ids(params.get("new")).join(", ");
  }
}

async function main() {
  showLogin();
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(AUTH_KEY, JSON.stringify({
      user: document.getElementById("user-input").value.trim(),
      password: document.getElementById("password-input").value}));
    document.getElementById("password-input").value = "";
    showLogin();
    if (state.campaign) guarded(openCampaign)(state.campaign.campaign_id);
  });
  document.getElementById("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `campaign=${encodeURIComponent(document.getElementById("campaign-select").value)}`;
  });
  document.getElementById("create").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(create)();
  });
  document.getElementById("seeds-from-adql").addEventListener("click", guarded(seedsFromADQL));
  document.getElementById("next-iteration").addEventListener("click", guarded(nextIteration));
  document.getElementById("candidates-topcat").addEventListener("click", sendCandidates);
  for (const button of document.querySelectorAll(".label-keys button[data-label]")) {
    button.addEventListener("click", () => guarded(giveLabel)(button.dataset.label));
  }
  document.getElementById("back").addEventListener("click", guarded(back));
  const keys = {y: "yes", n: "no", x: "noise", s: "skip"};
  document.addEventListener("keydown", (event) => {
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName) || !state.campaign) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.repeat) return;
    if (keys[event.key]) { event.preventDefault(); guarded(giveLabel)(keys[event.key]); }
    if (event.key === "b") { event.preventDefault(); guarded(back)(); }
  });
  window.addEventListener("hashchange", fromHash);
  await loadCampaigns();
  fromHash();
}
guarded(main)();
