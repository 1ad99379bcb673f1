// steer.html: steered and unsteered continuations side by side, generated with the key-value
// cache. Query: ?feature=<n>&strength=<s>&tokens=<n>&prompt=<text>[&temperature=<t>&seed=<n>].
// Results: #steer-output and #plain-output, data-tokens = the generated ids, comma-separated.
import { loadModel, query, setState, halfToFloat, pick, seeded, escapeHTML } from "./live.js";

const $ = (id) => document.getElementById(id);
let decoder = null;

async function steeringVector(model, feature, strength) {
  const info = model.saes.steer;
  if (!decoder) {
    const res = await fetch(new URL("saes/" + info.decoder, new URL("./live/", location.href)));
    if (!res.ok) throw new Error(`${info.decoder}: HTTP ${res.status}`);
    decoder = halfToFloat(new Uint8Array(await res.arrayBuffer()));
  }
  const m = model.manifest;
  const row = decoder.subarray(feature * m.d_model, (feature + 1) * m.d_model);
  let norm = 0;
  for (const v of row) norm += v * v;
  norm = Math.sqrt(norm);
  if (!(norm > 0)) throw new Error(`feature ${feature} has an all-zero decoder row: nothing to steer along`);
  const steer = new Float32Array(m.n_layers * m.d_model);
  const scale = (strength * info.typical_norm) / norm;
  for (let i = 0; i < m.d_model; i++) steer[info.layer * m.d_model + i] = row[i] * scale;
  return steer;
}

function readInputs(model) {
  const info = model.saes.steer;
  const feature = Number($("feature").value);
  if (!Number.isInteger(feature) || feature < 0 || feature >= info.d_sae) {
    throw new Error(`feature must be an integer in 0..${info.d_sae - 1}, got ${$("feature").value}`);
  }
  const strength = Number($("strength").value);
  if (!Number.isFinite(strength)) throw new Error(`strength must be a number, got ${$("strength").value}`);
  const tokens = Number($("tokens").value);
  if (!Number.isInteger(tokens) || tokens < 1 || tokens > 256) {
    throw new Error(`tokens must be an integer in 1..256, got ${$("tokens").value}`);
  }
  const temperature = Number($("temperature").value);
  if (!(temperature >= 0)) throw new Error(`temperature must be >= 0, got ${$("temperature").value}`);
  const seed = Number($("seed").value);
  if (!Number.isInteger(seed)) throw new Error(`seed must be an integer, got ${$("seed").value}`);
  const prompt = $("prompt").value;
  if (!prompt.trim()) throw new Error("the prompt is empty: type something");
  return { feature, strength, tokens, temperature, seed, prompt };
}

/** One continuation, token by token, with the cache; onToken(ids) after each. */
async function* continuation(model, ids, steer, n, temperature, seed) {
  const random = seeded(seed);
  let out = await model.run(ids, null, steer);
  for (let i = 0; i < n; i++) {
    const token = pick(out.logits.data, temperature, random);
    if (token === model.manifest.eos_token_id) return;
    yield token;
    if (i + 1 < n) out = await model.run([token], [out.present_keys, out.present_values], steer);
  }
}

async function generate(model) {
  const p = readInputs(model);
  const ids = model.tokens(p.prompt);
  const steer = await steeringVector(model, p.feature, p.strength);
  const panes = { steered: $("steer-output"), plain: $("plain-output") };
  const got = { steered: [], plain: [] };
  for (const pane of Object.values(panes)) { pane.dataset.tokens = ""; pane.innerHTML = `<span class="prompt">${escapeHTML(p.prompt)}</span>`; }
  const runs = {
    steered: continuation(model, ids, steer, p.tokens, p.temperature, p.seed),
    plain: continuation(model, ids, null, p.tokens, p.temperature, p.seed),
  };
  const t0 = performance.now();
  const live = new Set(Object.keys(runs));
  while (live.size) {
    for (const name of [...live]) {
      const next = await runs[name].next();
      if (next.done) { live.delete(name); continue; }
      got[name].push(next.value);
      panes[name].dataset.tokens = got[name].join(",");
      panes[name].innerHTML = `<span class="prompt">${escapeHTML(p.prompt)}</span>${escapeHTML(model.tokenizer.decode(got[name]))}`;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const n = got.steered.length + got.plain.length;
  panes.steered.dataset.tokensPerSecond = (n / seconds).toFixed(2);
  setState("done", `${n} tokens in ${seconds.toFixed(1)} s (${(n / seconds).toFixed(1)} tokens/s, both columns), on this machine`);
}

async function main() {
  const q = query();
  const fields = { feature: "feature", strength: "strength", tokens: "tokens", prompt: "prompt", temperature: "temperature", seed: "seed" };
  for (const [key, id] of Object.entries(fields)) if (q[key] !== undefined) $(id).value = q[key];
  const model = await loadModel();
  $("feature").max = model.saes.steer.d_sae - 1;
  const go = $("go");
  go.disabled = false;
  $("form").onsubmit = async (ev) => {
    ev.preventDefault();
    setState("running", "generating on this machine ...");
    go.disabled = true;
    try { await generate(model); }
    catch (err) { setState("error", String(err && err.message || err)); }
    finally { go.disabled = false; }
  };
  if (q.prompt !== undefined || q.feature !== undefined) $("form").requestSubmit();
  else setState("ready", "the model is loaded: pick a feature and a strength");
}

main().catch((err) => setState("error", String(err && err.message || err)));
