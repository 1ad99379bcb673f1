// steer.html: steered and unsteered continuations side by side, generated with the key-value
// cache. Query: ?feature=<n>&strength=<s>&tokens=<n>&prompt=<text>[&temperature=<t>&seed=<n>];
// every field is checked (live.js's fieldRules) before the model loads.
// Results: #steer-output and #plain-output, data-tokens = the generated ids, comma-separated.
import {
  loadIndex, loadModel, setState, halfToFloat, pick, seeded, escapeHTML,
  fieldRules, validate, checkContext, readQuery, showLimits, message, wireForm,
} from "./live.js";

const FIELDS = ["prompt", "feature", "strength", "tokens", "temperature", "seed"];
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
  if (!(norm > 0)) throw new Error(`feature: ${feature} has an all-zero decoder row: nothing to steer along, pick another`);
  const steer = new Float32Array(m.n_layers * m.d_model);
  const scale = (strength * info.typical_norm) / norm;
  for (let i = 0; i < m.d_model; i++) steer[info.layer * m.d_model + i] = row[i] * scale;
  return steer;
}

/** The form's values, checked: an InputError names the first field refused. */
function readInputs(index, rules) {
  const raw = Object.fromEntries(FIELDS.map((f) => [f, $(f).value]));
  const p = validate(FIELDS, raw, rules);
  p.ids = index.tokens(p.prompt);
  checkContext("prompt", p.prompt, p.ids, p.tokens);
  return p;
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

async function generate(model, p) {
  const ids = p.ids;
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
  const index = await loadIndex();
  const rules = fieldRules(index.saes);
  showLimits(rules);
  const q = readQuery(FIELDS);
  for (const [f, v] of Object.entries(q.values)) $(f).value = v; // as given: checked on submit
  let loading = null;
  const model = () => (loading ??= loadModel(index).catch((err) => {
    loading = null; // tried again on the next submit
    throw err;
  }));
  const go = $("go");
  wireForm($("form"), go, () => readInputs(index, rules),
           async (p) => { await generate(await model(), p); }, "generating on this machine ...");
  if (q.error) setState("error", q.error);
  else if (Object.keys(q.values).length) $("form").requestSubmit();
  else {
    await model();
    if (document.body.dataset.state === "loading") {
      setState("ready", "the model is loaded: pick a feature and a strength");
    }
  }
}

main().catch((err) => setState("error", message(err)));
