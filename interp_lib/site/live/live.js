// The embedded model in the reader's browser: SmolLM2-135M-Instruct on onnxruntime-web
// (WebAssembly, one thread), its tokenizer (@huggingface/tokenizers, the model's own
// tokenizer.json) and the book's SAE encoders. Everything runs here, on the reader's machine;
// the files come from this site and nothing is sent anywhere. Written by
// interp_lib/site/live_site.py next to lens.html and steer.html; the graph's contract is in
// interp_lib/site/browser_model.py. The pages' inputs are checked here too (fieldRules).
import * as ort from "./vendor/ort.wasm.min.mjs";
import { Tokenizer } from "./vendor/tokenizers.min.mjs";

const BASE = new URL("./", import.meta.url);
const CACHE_NAME = "interp-live-v1";

ort.env.wasm.wasmPaths = new URL("vendor/", BASE).href;
ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = true; // the model runs in a Web Worker: the page stays responsive while it computes
ort.env.logLevel = "error";

// The pages' shared navigation bar.
document.body.insertAdjacentHTML("afterbegin", '<header><nav><a href="index.html">The book</a>' +
  '<a href="lens.html">Live lens</a><a href="steer.html">Steering bench</a></nav></header>');

/** Mark the page done (or failed) for a reader, a test or a script. */
export function setState(state, message = "") {
  document.body.dataset.state = state;
  const status = document.getElementById("status");
  if (status && state === "error") status.textContent = ""; // the message is in #error alone
  else if (status && message) status.textContent = message;
  const box = document.getElementById("error");
  if (box) { box.textContent = state === "error" ? message : ""; box.hidden = state !== "error"; }
}

// ---- What the pages accept ---------------------------------------------------------------------
// Every field and query parameter of lens.html and steer.html is checked here, before the model
// loads, as strictly as the library checks its arguments: a value is used as typed or refused
// with one line naming the field, the value and the valid range; nothing is replaced silently.

/** The pages' limits (shown next to the fields). */
export const LIMITS = {
  textChars: 8000, // characters of a text (lens) or a prompt (bench)
  contextTokens: 2048, // tokens the model reads at once, BOS and new tokens included: the
  // model's context as interp_lib loads it (model.cfg.n_ctx: MAX_CTX, interp_lib/model/loading.py)
  newTokens: 256, // new tokens per column on the bench
  strength: 1000, // |strength| at most this (beyond it the float32 steering vector overflows)
  seed: 2 ** 32 - 1, // the sampler's seed is 32 bits (mulberry32)
};

/** A field's value refused: `field: "value" problem: valid range`. */
export class InputError extends Error {
  constructor(field, value, problem, range) {
    super(`${field}: ${shown(value)} ${problem}: ${range}`);
    this.name = "InputError";
    this.field = field;
  }
}

/** `value` quoted for a message; a long one cut, with its length. */
function shown(value) {
  const chars = [...value];
  if (chars.length <= 60) return JSON.stringify(value);
  return `${JSON.stringify(chars.slice(0, 40).join(""))}... (${chars.length} characters)`;
}

const INTEGER = /^[+-]?\d+$/;
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function integerRule(lo, hi) {
  const range = `an integer from ${lo} to ${hi}`;
  return {
    range,
    parse(field, raw) {
      const s = raw.trim();
      if (!s) throw new InputError(field, raw, "is empty", range);
      if (!INTEGER.test(s)) throw new InputError(field, raw, "is not an integer", range);
      const n = Number(s);
      if (!(n >= lo && n <= hi)) throw new InputError(field, raw, "is out of range", range);
      return n;
    },
  };
}

function numberRule(lo, hi, range) {
  return {
    range,
    parse(field, raw) {
      const s = raw.trim();
      if (!s) throw new InputError(field, raw, "is empty", range);
      if (!NUMBER.test(s)) throw new InputError(field, raw, "is not a number", range);
      const n = Number(s);
      if (!(n >= lo && n <= hi)) throw new InputError(field, raw, "is out of range", range);
      return n === 0 ? 0 : n; // -0 is 0
    },
  };
}

function textRule() {
  const range = `a text of 1 to ${LIMITS.textChars} characters`;
  return {
    range,
    parse(field, raw) {
      if (!raw.trim()) throw new InputError(field, raw, raw ? "is blank" : "is empty", range);
      if ([...raw].length > LIMITS.textChars) {
        throw new InputError(field, raw, "is too long", range);
      }
      return raw;
    },
  };
}

/** The rule of every field (`range`: what it accepts, in words; `parse(field, raw)`: the value,
 * or an InputError), given the SAE index (saes.json). */
export function fieldRules(saes) {
  const keys = saes.saes.map((s) => s.key);
  const strength = LIMITS.strength;
  const saeRange = `one of the shipped SAEs: ${keys.join(", ")}`;
  return {
    sae: {
      range: saeRange,
      parse(field, raw) {
        if (!keys.includes(raw)) throw new InputError(field, raw, "is not a shipped SAE", saeRange);
        return raw;
      },
    },
    text: textRule(),
    prompt: textRule(),
    feature: integerRule(0, saes.steer.d_sae - 1),
    strength: numberRule(-strength, strength, `a number from -${strength} to ${strength}`),
    tokens: integerRule(1, LIMITS.newTokens),
    temperature: numberRule(0, Number.MAX_VALUE, "a finite number >= 0 (0: greedy)"),
    seed: integerRule(0, LIMITS.seed),
  };
}

/** The values of `fields` (names) from `raw` ({name: string}), checked: the first refused one
 * throws its InputError. */
export function validate(fields, raw, rules) {
  const out = {};
  for (const f of fields) out[f] = rules[f].parse(f, raw[f] ?? "");
  return out;
}

/** Refuse `text` (field `field`) if it is longer, in tokens with BOS and `extra` new tokens,
 * than the context; `ids`: its token ids with BOS. */
export function checkContext(field, text, ids, extra = 0) {
  const limit = LIMITS.contextTokens;
  if (ids.length + extra <= limit) return;
  const range = extra
    ? `at most ${limit} tokens with the ${extra} new ones (the model's context on this page)`
    : `at most ${limit} tokens (the model's context on this page)`;
  throw new InputError(field, text, `is ${ids.length} tokens with BOS`, range);
}

/** The query's parameters, each one of `fields` and given once: {values} or {error}. */
export function readQuery(fields, search = location.search) {
  const values = {};
  for (const [k, v] of new URLSearchParams(search)) {
    if (!fields.includes(k)) {
      const error = `query: ${JSON.stringify(k)} is not a parameter of this page: ${fields.join(", ")}`;
      return { values, error };
    }
    if (k in values) return { values, error: `${k}: given more than once in the query: give it once` };
    values[k] = v;
  }
  return { values, error: null };
}

/** Show each field's range next to it (elements with data-limit="<field>"). */
export function showLimits(rules) {
  for (const el of document.querySelectorAll("[data-limit]")) {
    const f = el.dataset.limit;
    el.textContent = f === "context"
      ? `at most ${LIMITS.contextTokens} tokens in all (the model's context on this page)`
      : rules[f].range;
  }
}

/** The error's message, for the page's one line. */
export function message(err) {
  return String((err && err.message) || err);
}

async function fetchJSON(path) {
  const res = await fetch(new URL(path, BASE));
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

/** The bytes of `path`, from the browser's cache after the first visit; onBytes(n) as they come. */
async function fetchBytes(path, onBytes) {
  const url = new URL(path, BASE).href;
  let cache = null;
  try { cache = await caches.open(CACHE_NAME); } catch { cache = null; }
  let res = cache ? await cache.match(url) : undefined;
  const fromCache = Boolean(res);
  if (!res) res = await fetch(url);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  const reader = res.body.getReader();
  const parts = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    size += value.length;
    onBytes(value.length);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const p of parts) { bytes.set(p, at); at += p.length; }
  if (cache && !fromCache) {
    try { await cache.put(url, new Response(bytes)); } catch { /* over quota: fetched again next time */ }
  }
  return bytes;
}

/** fp16 bytes -> Float32Array. */
// A page's form: read and check the inputs, then run; a refused input or a failed run ends in
// the error state with its message, and the button is free again either way.
export function wireForm(form, button, read, run, running) {
  let busy = false;
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    if (busy) return;
    let p;
    try { p = read(); }
    catch (err) { setState("error", message(err)); return; }
    busy = true;
    button.disabled = true;
    setState("running", running);
    try { await run(p); }
    catch (err) { setState("error", message(err)); }
    finally { busy = false; button.disabled = false; }
  };
  button.disabled = false;
}

export function halfToFloat(bytes) {
  const half = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) {
    const h = half[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/** A progress bar over a known number of bytes. */
function progress(total) {
  const bar = document.getElementById("progress");
  const label = document.getElementById("progress-label");
  let got = 0;
  if (bar) { bar.max = total; bar.value = 0; bar.hidden = false; }
  return (n) => {
    got += n;
    if (bar) bar.value = got;
    if (label) label.textContent = `downloading the model: ${(got / 1e6).toFixed(0)} of ${(total / 1e6).toFixed(0)} MB`;
  };
}

/** The small files the pages check inputs against before the model loads: the model's manifest,
 * the SAE index (saes.json) and the tokenizer. */
export async function loadIndex() {
  const [manifest, saes, tokJson, tokConfig] = await Promise.all([
    fetchJSON("model/manifest.json"), fetchJSON("saes/saes.json"),
    fetchJSON("model/tokenizer.json"), fetchJSON("model/tokenizer_config.json"),
  ]);
  const tokenizer = new Tokenizer(tokJson, tokConfig);
  return {
    manifest, saes, tokenizer,
    /** Token ids of `text` with BOS in front, as TransformerLens's to_tokens(text) gives them. */
    tokens: (text) => [manifest.bos_token_id, ...tokenizer.encode(text, { add_special_tokens: false }).ids],
  };
}

/** Load the model's weights (with a progress bar) after loadIndex(). `graph`: "model" (every
 * block, the key-value cache, steering, logits: the bench) or "lens" (the blocks up to the
 * deepest SAE's hook, activations only; it reads a subset of the same weight files). */
export async function loadModel(index, graph = "model") {
  const t0 = performance.now();
  const { manifest, saes, tokenizer } = index;
  const spec = graph === "lens" ? manifest.lens : manifest;
  const files = [spec.graph, ...spec.weights.map((w) => w.path)];
  const total = spec.weights.reduce((a, w) => a + w.bytes, 0);
  const tick = progress(total);
  const blobs = [];
  for (const f of files) blobs.push(await fetchBytes("model/" + f, f === spec.graph ? () => {} : tick));
  const label = document.getElementById("progress-label");
  if (label) label.textContent = "starting the model (WebAssembly) ...";
  const session = await ort.InferenceSession.create(blobs[0], {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
    externalData: spec.weights.map((w, i) => ({ path: w.path, data: blobs[i + 1] })),
  });
  if (label) label.textContent = `model loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s, on this machine`;
  const bar = document.getElementById("progress");
  if (bar) bar.hidden = true;
  return new LiveModel(session, manifest, saes, tokenizer, graph);
}

export class LiveModel {
  constructor(session, manifest, saes, tokenizer, graph = "model") {
    this.session = session;
    this.manifest = manifest;
    this.saes = saes;
    this.tokenizer = tokenizer;
    this.graph = graph;
    this.encoders = {};
  }

  /** Token ids of `text` with BOS in front, as TransformerLens's to_tokens(text) gives them. */
  tokens(text) {
    return [this.manifest.bos_token_id, ...this.tokenizer.encode(text, { add_special_tokens: false }).ids];
  }

  piece(id) { return this.tokenizer.decode([id]); }

  emptyCache() {
    const m = this.manifest;
    const shape = [m.n_layers, m.n_kv_heads, 1, m.d_head];
    const zeros = () => new ort.Tensor("float32", new Float32Array(shape.reduce((a, b) => a * b)), shape);
    return [zeros(), zeros()];
  }

  /** One forward pass over `ids` after `cache` ([keys, values] tensors; null: a fresh context).
   * The lens graph takes `ids` alone (a fresh context, no steering). */
  async run(ids, cache = null, steer = null) {
    const m = this.manifest;
    const inputIds = new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
    if (this.graph === "lens") {
      if (cache || steer) throw new Error("the lens graph runs a fresh context without steering");
      return this.session.run({ input_ids: inputIds });
    }
    const [keys, values] = cache || this.emptyCache();
    // a copy: in the Web Worker the inputs' buffers are handed over (detached) after each run
    const steerData = steer ? steer.slice() : new Float32Array(m.n_layers * m.d_model);
    const out = await this.session.run({
      input_ids: inputIds,
      past_keys: keys,
      past_values: values,
      steer: new ort.Tensor("float32", steerData, [m.n_layers, m.d_model]),
    });
    if (cache) { keys.dispose?.(); values.dispose?.(); }
    return out;
  }

  /** The SAE's encoder (W_enc [d_in, d_sae], b_enc, b_dec as Float32Arrays). */
  async encoder(key) {
    if (this.encoders[key]) return this.encoders[key];
    const info = this.saes.saes.find((s) => s.key === key);
    if (!info) throw new Error(`unknown SAE ${key}: valid ${this.saes.saes.map((s) => s.key).join(", ")}`);
    const all = halfToFloat(await fetchBytes("saes/" + info.encoder, () => {}));
    const { d_in, d_sae } = info;
    const enc = {
      info,
      W_enc: all.subarray(0, d_in * d_sae),
      b_enc: all.subarray(d_in * d_sae, d_in * d_sae + d_sae),
      b_dec: all.subarray(d_in * d_sae + d_sae, d_in * d_sae + d_sae + d_in),
    };
    this.encoders[key] = enc;
    return enc;
  }
}

/** The `n` strongest features of activation `x` (d_in floats) under encoder `enc`, as
 * [[feature, activation], ...], activations > 0 (SAELens's TopK SAE: ReLU of the top k). */
export function topFeatures(enc, x, n) {
  const { d_in, d_sae } = enc.info;
  const pre = Float32Array.from(enc.b_enc);
  for (let i = 0; i < d_in; i++) {
    const xi = x[i] - enc.b_dec[i];
    const row = enc.W_enc.subarray(i * d_sae, (i + 1) * d_sae);
    for (let j = 0; j < d_sae; j++) pre[j] += xi * row[j];
  }
  const best = [];
  for (let j = 0; j < d_sae; j++) {
    const v = pre[j];
    if (v <= 0 || (best.length === n && v <= best[n - 1][1])) continue;
    best.push([j, v]);
    best.sort((a, b) => b[1] - a[1]);
    if (best.length > n) best.pop();
  }
  return best;
}

export function argmax(arr) {
  let best = 0;
  for (let i = 1; i < arr.length; i++) if (arr[i] > arr[best]) best = i;
  return best;
}

/** A seeded generator (mulberry32) for reproducible sampling. */
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Next token from `logits`: argmax at temperature 0, else a sample from softmax(logits / t). */
export function pick(logits, temperature, random) {
  if (!(temperature > 0)) return argmax(logits);
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) { p[i] = Math.exp((logits[i] - max) / temperature); sum += p[i]; }
  let r = random() * sum;
  for (let i = 0; i < p.length; i++) { r -= p[i]; if (r <= 0) return i; }
  return p.length - 1;
}

export function escapeHTML(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
