// Shared by the explorer and the campaign pages: the archive's services
// (TAP, SODA, byexample, decode, campaigns), values formatted as people
// read them, small DOM helpers and SAMP.  An ES module: nothing here is a
// global, so samp.js keeps window.samp.
export const SERVICE = {
  tap: "/tap/sync",
  soda: "/retrspect/q/sdl/dlget",
  byexample: "/retrspect/q/byexample/api",
  decode: "/retrspect/q/decode/api",
  dimensions: "/retrspect/q/dimensions/api",
  ssap: "/retrspect/q/ssa/ssap.xml",
  campaignCreate: "/retrspect/q/campaign_create/api",
  campaignLabel: "/retrspect/q/campaign_label/api",
  campaignNext: "/retrspect/q/campaign_next/api",
  campaignProgress: "/retrspect/q/campaign_progress/api",
};
export const EXTRAGALACTIC = new Set(["galaxy", "qso"]);

// ---- formatting: values as people read them ---------------------------------

const MINUS = "\u2212";
function signed(text) { return text.replace(/^-/, MINUS); }
export function sig(x, digits = 4) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  return signed(Number(x).toPrecision(digits));
}
export function fixed(x, decimals) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  return signed(Number(x).toFixed(decimals));
}
export const format = {
  distance: (d) => sig(d, 4),
  klass: (row) => row.ml_class
    ? `${row.ml_class} (${Math.round(100 * row.class_probability)} %)` : "–",
  // stars: line-of-sight velocity in km/s with its error; galaxies and
  // quasars: redshift
  motion(row) {
    if (EXTRAGALACTIC.has(row.ml_class)) {
      if (row.redshift === null) return "–";
      const err = row.redshift_err === null ? "" : ` ± ${sig(row.redshift_err, 2)}`;
      return `z = ${sig(row.redshift, 4)}${err}`;
    }
    if (row.velocity === null) return "–";
    const err = row.velocity_err === null ? "" : ` ± ${fixed(row.velocity_err, 1)}`;
    return `${fixed(row.velocity, 1)}${err} km/s`;
  },
  stellar(row) {
    const parts = [];
    if (row.teff !== null) parts.push(`${Math.round(row.teff)} K`);
    if (row.logg !== null) parts.push(`log g ${fixed(row.logg, 2)}`);
    if (row.feh !== null) parts.push(`[Fe/H] ${row.feh >= 0 ? "+" : ""}${fixed(row.feh, 2)}`);
    return parts.length ? parts.join(", ") : "–";
  },
};

// ---- the archive's services -----------------------------------------------

export function adqlString(text) { return "'" + String(text).replace(/'/g, "''") + "'"; }

async function failureText(response) {
  const text = await response.text();
  const info = /<INFO[^>]*QUERY_STATUS[^>]*>([^<]*)</.exec(text);
  if (info) return info[1];
  return `${response.url.split("?")[0]} answered ${response.status} ` +
    `${response.headers.get("content-type") || ""}, not JSON`;
}

export async function asRows(response) {
  if (!response.ok || !(response.headers.get("content-type") || "").includes("json")) {
    throw new Error(await failureText(response));
  }
  const table = await response.json();
  // ADQL names are case-insensitive; DaCHS writes some in their RD case
  const names = table.columns.map((c) => c.name.toLowerCase());
  return table.data.map((values) => Object.fromEntries(names.map((n, i) => [n, values[i]])));
}

export async function tap(query, maxrec = 1000) {
  const body = new URLSearchParams({LANG: "ADQL", REQUEST: "doQuery", QUERY: query,
    RESPONSEFORMAT: "json", MAXREC: String(maxrec)});
  return asRows(await fetch(SERVICE.tap, {method: "POST", body}));
}

// DaCHS reads the parameters of a multipart POST from its body only
export async function api(service, params, init) {
  if (init && init.body instanceof FormData) {
    init.body.append("RESPONSEFORMAT", "json");
    return asRows(await fetch(service, init));
  }
  const url = `${service}?${new URLSearchParams({...params, RESPONSEFORMAT: "json"})}`;
  return asRows(await fetch(url, init));
}

// a TAP sync URL for the query: a VOTable, or another RESPONSEFORMAT (csv)
export function tapURL(query, responseFormat = null) {
  const params = {LANG: "ADQL", REQUEST: "doQuery", QUERY: query};
  if (responseFormat) params.RESPONSEFORMAT = responseFormat;
  return new URL(`${SERVICE.tap}?${new URLSearchParams(params)}`, location.href).href;
}

// the spectra fetched so far, by publisher DID
export const spectra = new Map();

// the spectrum exactly as the archive serves it (SODA, CSV)
export async function spectrum(row) {
  if (spectra.has(row.ssa_pubdid)) return spectra.get(row.ssa_pubdid);
  const url = `${SERVICE.soda}?${new URLSearchParams({ID: row.ssa_pubdid, FORMAT: "text/csv"})}`;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${row.obs_id}: ${await failureText(response)}`);
  const lines = (await response.text()).split("\n").filter((l) => l && l[0] !== "#");
  const wave = [], flux = [];
  for (const line of lines.slice(1)) {
    const [w, f] = line.split(",");
    if (f !== "" && isFinite(+f)) { wave.push(+w); flux.push(+f); }
  }
  const result = {wave, flux};
  spectra.set(row.ssa_pubdid, result);
  return result;
}


export const VALUE_COLUMNS = `s.ssa_pubdid, s.ssa_targname, s.ssa_collection, s.datalink,
  s.accref, s.teff, s.logg, s.feh, s.mk_type, m.ml_class, m.class_probability,
  m.velocity, m.velocity_err, m.redshift, m.redshift_err`;


export function setStatus(text, isError = false) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}


// byexample's neighbours (rank order) with the values the table shows
export async function withValues(found) {
  const ids = found.map((r) => adqlString(r.obs_id)).join(", ") || "''";
  const adql = `SELECT s.obs_id, ${VALUE_COLUMNS} FROM retrspect.spectra AS s
LEFT OUTER JOIN retrspect.ml_results AS m ON m.pubdid = s.ssa_pubdid
WHERE s.obs_id IN (${ids})`;
  const values = new Map((await tap(adql, found.length || 1)).map((r) => [r.obs_id, r]));
  return [found.map((r) => ({...values.get(r.obs_id), dist: r.dist})), adql];
}


export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...[].concat(children));
  return node;
}
export const tr = (cells) => el("tr", {}, cells);
export const td = (content, attrs = {}) => el("td", attrs, [content]);
export const th = (content) => el("th", {scope: "col"}, [content]);
export const link = (href, text, attrs = {}) => el("a", {href, ...attrs}, [text]);


export function median(values) {
  const sorted = values.filter(isFinite).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : 1;
}


export function guarded(work) {
  return (...args) => work(...args).catch((err) => setStatus(String(err.message || err), true));
}


// ---- SAMP (DaCHS's samp.js, web profile) ----------------------------------

// what was sent over SAMP (the tests read it)
export const sent = [];
let connector = null;
export function sampNotify(message, params) {
  if (!window.samp) { setStatus("samp.js did not load.", true); return; }
  connector = connector || new window.samp.Connector("retrspect explorer",
    {"samp.name": "retrspect explorer",
      "samp.description.text": "Spectra and their neighbours from a retrspect archive"});
  connector.runWithConnection((connection) => {
    connection.notifyAll([new window.samp.Message(message, params)]);
    sent.push({mtype: message, params});
    setStatus(`Sent ${message} over SAMP.`);
  }, (err) => setStatus(`No SAMP hub answered (${err}); start TOPCAT or SPLAT-VO first.`, true));
}

export function sendSpectrum(row) {
  const url = new URL(`/getproduct/${row.accref.split("/getproduct/").pop()}`, location.href).href;
  sampNotify("spectrum.load.ssa-generic", {url, name: row.obs_id, meta: {
    "ssa:Access.Reference": url, "ssa:Access.Format": "application/x-votable+xml",
    "ssa:DataID.Title": row.obs_id, "ssa:Target.Name": row.ssa_targname || ""}});
}
