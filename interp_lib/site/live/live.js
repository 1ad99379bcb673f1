// The embedded model in the reader's browser: SmolLM2-135M-Instruct on onnxruntime-web
// (WebAssembly, one thread), its tokenizer (@huggingface/tokenizers, the model's own
// tokenizer.json) and the book's SAE encoders. Everything runs here, on the reader's machine;
// the files come from this site and nothing is sent anywhere. Written by interp_lib/live_site.py
// next to lens.html and steer.html; the graph's contract is in interp_lib/browser_model.py.
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

/** The query string as a plain object. */
export function query() {
  return Object.fromEntries(new URLSearchParams(location.search).entries());
}

/** Mark the page done (or failed) for a reader, a test or a script. */
export function setState(state, message = "") {
  document.body.dataset.state = state;
  const status = document.getElementById("status");
  if (status && message) status.textContent = message;
  if (state === "error") {
    const box = document.getElementById("error");
    if (box) { box.textContent = message; box.hidden = false; }
  }
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

/** Load the model, its tokenizer and the SAE index (weights, with a progress bar). `graph`:
 * "model" (every block, the key-value cache, steering, logits: the bench) or "lens" (the blocks
 * up to the deepest SAE's hook, activations only; it reads a subset of the same weight files). */
export async function loadModel(graph = "model") {
  const t0 = performance.now();
  const [manifest, saes, tokJson, tokConfig] = await Promise.all([
    fetchJSON("model/manifest.json"), fetchJSON("saes/saes.json"),
    fetchJSON("model/tokenizer.json"), fetchJSON("model/tokenizer_config.json"),
  ]);
  const tokenizer = new Tokenizer(tokJson, tokConfig);
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
