// lens.html: the features of the reader's text. Query: ?sae=<release>/<sae_id>&text=<text>;
// both are checked (live.js's fieldRules) before the model loads.
// Results: #lens-results, one <tr> per (token, feature), top 5 features of every token.
import {
  loadIndex, loadModel, setState, topFeatures, escapeHTML,
  fieldRules, validate, checkContext, readQuery, showLimits, message, wireForm,
} from "./live.js";

const FIELDS = ["text", "sae"];
const TOP = 5;
const form = document.getElementById("form");
const textBox = document.getElementById("text");
const picker = document.getElementById("sae");

function featureURL(info, f) {
  return `features/${info.release}--${info.sae_id}/${f}.html`;
}

async function show(model, { text, sae: key, ids }) {
  const enc = await model.encoder(key);
  const t0 = performance.now();
  const out = await model.run(ids);
  const t1 = performance.now();
  const acts = out[enc.info.hook].data;
  const d = enc.info.d_in;
  const rows = [];
  const strongest = [];
  for (let pos = 1; pos < ids.length; pos++) { // position 0 is BOS: left out, as the library does
    const top = topFeatures(enc, acts.subarray(pos * d, (pos + 1) * d), TOP);
    strongest.push(top);
    top.forEach(([f, a], rank) => rows.push({ index: pos - 1, id: ids[pos], token: model.piece(ids[pos]), f, a, rank }));
  }
  const t2 = performance.now();
  const max = Math.max(1e-9, ...strongest.map((t) => (t.length ? t[0][1] : 0)));
  const tokens = document.getElementById("tokens");
  tokens.innerHTML = ids.slice(1).map((id, i) => {
    const top = strongest[i][0];
    const alpha = top ? (top[1] / max).toFixed(3) : 0;
    const title = top ? `feature ${top[0]}: ${top[1].toFixed(2)}` : "no feature active";
    return `<span class="tok" data-i="${i}" title="${title}" style="background: rgba(255, 140, 0, ${alpha})">${escapeHTML(model.piece(id))}</span>`;
  }).join("");
  const detail = document.getElementById("detail");
  const steerable = key === model.saes.steer.key; // the bench steers this SAE's features
  tokens.onclick = (ev) => {
    const span = ev.target.closest(".tok");
    if (!span) return;
    tokens.querySelectorAll(".selected").forEach((s) => s.classList.remove("selected"));
    span.classList.add("selected");
    const i = Number(span.dataset.i);
    detail.innerHTML = `<p>Token ${i} <code>${escapeHTML(JSON.stringify(model.piece(ids[i + 1])))}</code>: its top features</p><table>` +
      strongest[i].map(([f, a]) => `<tr><td><a href="${featureURL(enc.info, f)}">feature ${f}</a></td><td>${a.toFixed(3)}</td>` +
        (steerable ? `<td><a href="steer.html?feature=${f}">steer with it</a></td>` : "") + "</tr>").join("") + "</table>";
  };
  const table = document.getElementById("lens-results");
  table.dataset.forwardMs = (t1 - t0).toFixed(1);
  table.dataset.encodeMs = (t2 - t1).toFixed(1);
  table.dataset.tokens = String(ids.length - 1);
  table.dataset.sae = key;
  table.querySelector("tbody").innerHTML = rows.map((r) =>
    `<tr data-token-index="${r.index}" data-token="${escapeHTML(r.token)}" data-token-id="${r.id}" data-feature="${r.f}" data-activation="${r.a}">` +
    `<td>${escapeHTML(r.token)}</td><td>${r.rank + 1}</td><td><a href="${featureURL(enc.info, r.f)}">${r.f}</a></td><td>${r.a.toFixed(3)}</td></tr>`).join("");
  setState("done", `${ids.length - 1} tokens: model ${((t1 - t0) / 1000).toFixed(2)} s, SAE ${((t2 - t1) / 1000).toFixed(2)} s, on this machine`);
}

/** The form's values, checked: an InputError names the first field refused. */
function readInputs(index, rules) {
  const p = validate(FIELDS, { text: textBox.value, sae: picker.value }, rules);
  p.ids = index.tokens(p.text);
  checkContext("text", p.text, p.ids);
  return p;
}

async function main() {
  const index = await loadIndex();
  const rules = fieldRules(index.saes);
  showLimits(rules);
  for (const s of index.saes.saes) picker.add(new Option(`${s.release} / ${s.sae_id}`, s.key));
  picker.value = index.saes.default_lens;
  const q = readQuery(FIELDS);
  if (q.values.sae !== undefined) {
    // kept as given, even when it is no shipped SAE: the check on submit says so
    if (![...picker.options].some((o) => o.value === q.values.sae)) {
      picker.add(new Option(`${q.values.sae} (not a shipped SAE)`, q.values.sae));
    }
    picker.value = q.values.sae;
  }
  if (q.values.text !== undefined) textBox.value = q.values.text;
  let loading = null;
  const model = () => (loading ??= loadModel(index, "lens").catch((err) => {
    loading = null; // tried again on the next submit
    throw err;
  }));
  const go = document.getElementById("go");
  wireForm(form, go, () => readInputs(index, rules),
           async (p) => { await show(await model(), p); }, "running the model on this machine ...");
  if (q.error) setState("error", q.error);
  else if (Object.keys(q.values).length) form.requestSubmit();
  else {
    await model();
    if (document.body.dataset.state === "loading") {
      setState("ready", "the model is loaded: type a text and press the button");
    }
  }
}

main().catch((err) => setState("error", message(err)));
