// Feature dashboards and feature search of the book (interp_lib.feature_dashboards writes the data).
// The viewer: features/dashboard.html#<slug>/<n>; the search: features/search.html#token=<text>,
// #number=[<slug>/]<n>, #like=<slug>/<n>. Data files are scripts calling interpDash.* (pages opened
// from file:// may load scripts, not fetch files). When a view is drawn, #dash gets
// data-state="ready" (or "error") and data-ms (milliseconds since the page started loading).
(function () {
  "use strict";
  const store = { site: null, shards: {}, contexts: {}, tokens: {} };
  // dashboards.js (loaded right after this file, after #dash) starts the page: no waiting for the
  // theme's deferred scripts.
  const D = (window.interpDash = {
    site: (s) => { store.site = s; start(); },
    shard: (slug, start, records) => { store.shards[slug + "/" + start] = records; },
    contexts: (slug, c) => { store.contexts[slug] = c; },
    tokens: (slug, index) => { store.tokens[slug] = index; },
  });
  const loading = {};
  function load(src) {
    if (!loading[src]) {
      loading[src] = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = src;
        s.onload = resolve;
        s.onerror = () => reject(new Error("could not load " + src));
        document.head.appendChild(s);
      });
    }
    return loading[src];
  }
  const esc = (t) => String(t).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = (x, d = 2) => Number(x).toFixed(d);
  const pct = (d) => (d * 100).toFixed(d >= 1e-3 ? 2 : 3) + "%";
  const findSae = (slug) => store.site.saes.find((s) => s.slug === slug);
  const saeName = (s) => `<code>${esc(s.release)}</code> / <code>${esc(s.sae_id)}</code>`;
  const dash = () => document.getElementById("dash");

  function done(el, state, html, extra) {
    el.innerHTML = html;
    el.dataset.state = state;
    el.dataset.ms = String(Math.round(performance.now()));
    for (const [k, v] of Object.entries(extra || {})) el.dataset[k] = String(v);
  }

  function parseFeature(text) {
    // "<slug>/<n>" -> {sae, n}; throws an Error naming the valid choices
    const m = /^(.+)\/(\d+)$/.exec(text || "");
    const names = store.site.saes.map((s) => s.slug).join(", ");
    if (!m) throw new Error(`give a feature as <sae>/<number>; SAEs: ${names}`);
    const sae = findSae(m[1]);
    if (!sae) throw new Error(`unknown SAE ${m[1]}; choose one of ${names}`);
    const n = parseInt(m[2], 10);
    if (n >= sae.d_sae) throw new Error(`feature ${n} out of range: ${sae.slug} has features 0..${sae.d_sae - 1}`);
    return { sae, n };
  }

  async function record(sae, n) {
    const size = store.site.shard_size, start = Math.floor(n / size) * size;
    await load(`${sae.slug}/data/shard-${start / size}.js`);
    return store.shards[sae.slug + "/" + start][n - start];
  }

  function svgBars(counts, lo, hi, xlabel) {
    const W = 640, H = 170, L = 50, B = 34, T = 8, R = 10;
    const top = Math.max(1, ...counts), bw = (W - L - R) / counts.length, step = (hi - lo) / counts.length;
    let bars = "";
    counts.forEach((c, i) => {
      const h = ((H - B - T) * c) / top;
      bars += `<rect x="${(L + i * bw).toFixed(1)}" y="${(H - B - h).toFixed(1)}" width="${Math.max(bw - 1, 1).toFixed(1)}" height="${h.toFixed(1)}"><title>${fmt(lo + i * step, 3)} to ${fmt(lo + (i + 1) * step, 3)}: ${c.toLocaleString()}</title></rect>`;
    });
    return `<svg class="interp-hist" viewBox="0 0 ${W} ${H}" width="100%" style="max-width:${W}px" role="img">` +
      `<g fill="rgb(230, 97, 0)">${bars}</g>` +
      `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="currentColor"/>` +
      `<text x="${L}" y="${H - B + 14}" font-size="11" fill="currentColor">${fmt(lo, 3)}</text>` +
      `<text x="${W - R}" y="${H - B + 14}" font-size="11" text-anchor="end" fill="currentColor">${fmt(hi, 3)}</text>` +
      `<text x="${(L + W - R) / 2}" y="${H - 4}" font-size="12" text-anchor="middle" fill="currentColor">${esc(xlabel)}</text>` +
      `<text x="${L - 4}" y="${T + 10}" font-size="11" text-anchor="end" fill="currentColor">${top.toLocaleString()}</text>` +
      `<text x="${L - 4}" y="${H - B}" font-size="11" text-anchor="end" fill="currentColor">0</text></svg>`;
  }

  function exampleRows(rec, ctxs, which) {
    const s = store.site, raw = atob(rec.acts);
    const rows = [];
    for (const e of which) {
      const ex = rec.examples[e];
      if (!ex) continue;
      const [ctx, pos, peak] = ex;
      const lo = Math.max(1, pos - s.before), hi = Math.min(ctxs[ctx].length + 1, pos + s.after + 1);
      const cells = [];
      let carry = null;
      for (let p = lo; p < hi; p++) {
        const v = (raw.charCodeAt(e * s.width + p - pos + s.before) / 255) * rec.max;
        const t = ctxs[ctx][p - 1];
        if (t === "" && p < hi - 1) { carry = carry === null ? v : Math.max(carry, v); continue; }
        cells.push([t, carry === null ? v : Math.max(carry, v)]);
        carry = null;
      }
      const spans = cells.map(([t, v]) => {
        const a = rec.max > 0 ? Math.min(1, v / rec.max) : 0;
        const style = `background: rgba(230, 97, 0, ${a.toFixed(2)})` + (a > 0 ? "; border-bottom: 1px solid #b34700" : "");
        return `<span title="${esc(JSON.stringify(t))}: ${fmt(v)}" style="${style}">${esc(t.replace(/\n/g, "\u21b5"))}</span>`;
      }).join("");
      rows.push(`<div class="interp-example" data-example="${e}"><div class="interp-example-label">max ${fmt(peak)} \u00b7 held-out context ${ctx}, token ${pos}</div><div class="interp-example-tokens">${spans}</div></div>`);
    }
    return rows.length ? `<div class="interp-tokens">${rows.join("")}</div>` : "<p>None.</p>";
  }

  function quantileSections(rec, ctxs, sae) {
    const s = store.site, others = rec.contexts - s.n_top;
    if (others <= 0) return "";
    const spread = [...Array(s.n_spread).keys()].map((i) => s.n_top + i);
    if (others < s.n_spread) {
      return `<h3>The other ${others} context(s) it fires in</h3>` + exampleRows(rec, ctxs, spread);
    }
    const per = s.n_spread / s.n_quantiles;
    let out = `<p>The other ${others.toLocaleString()} contexts it fires in, ranked by their largest activation and cut into ${s.n_quantiles} quantile groups; ${per} contexts at evenly spaced ranks from each.</p>`;
    for (let q = 0; q < s.n_quantiles; q++) {
      const idx = spread.slice(q * per, (q + 1) * per);
      const peaks = idx.map((e) => rec.examples[e] && rec.examples[e][2]).filter((v) => v !== undefined && v !== null);
      const range = peaks.length ? ` (examples' maxima ${fmt(Math.min(...peaks))} to ${fmt(Math.max(...peaks))})` : "";
      out += `<h3>Quantile ${q + 1} of ${s.n_quantiles}: ranks ${q * 100 / s.n_quantiles}-${(q + 1) * 100 / s.n_quantiles}%${range}</h3>` + exampleRows(rec, ctxs, idx);
    }
    return out;
  }

  const featureLink = (sae, n, label) => `<a href="#${esc(sae.slug)}/${n}">${esc(label || "feature " + n)}</a>`;

  function lensTable(rec) {
    const rows = rec.up.map(([t, v], i) => {
      const [dt, dv] = rec.down[i] || ["", 0];
      return `<tr><td><code>${esc(JSON.stringify(t))}</code></td><td>${v >= 0 ? "+" : ""}${fmt(v, 3)}</td><td><code>${esc(JSON.stringify(dt))}</code></td><td>${dv >= 0 ? "+" : ""}${fmt(dv, 3)}</td></tr>`;
    });
    return `<table class="interp-table table"><thead><tr><th>promoted</th><th>\u0394 logit</th><th>suppressed</th><th>\u0394 logit</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  async function showFeature() {
    const el = dash(), t0 = performance.now();
    let sae, n;
    try {
      ({ sae, n } = parseFeature(decodeURIComponent(location.hash.slice(1))));
    } catch (err) {
      done(el, "error", `<p class="interp-error">${esc(err.message)}. Open a feature from <a href="search.html">the search</a>.</p>`);
      return;
    }
    await load(`${sae.slug}/data/contexts.js`);
    const rec = await record(sae, n), ctxs = store.contexts[sae.slug], s = store.site;
    document.getElementById("dash-title").textContent = `Feature ${n}`;
    document.title = `Feature ${n} \u00b7 ${sae.release} / ${sae.sae_id}`;
    const nav = [];
    if (n > 0) nav.push(featureLink(sae, n - 1, "\u2190 feature " + (n - 1)));
    if (n + 1 < sae.d_sae) nav.push(featureLink(sae, n + 1, "feature " + (n + 1) + " \u2192"));
    nav.push(`<a href="search.html#like=${esc(sae.slug)}/${n}">similar features</a>`);
    if (sae.full_pages.includes(n)) nav.push(`<a href="${esc(sae.slug)}/${n}.html">its page, with the chapters that link to it</a>`);
    const parts = [`<p>${saeName(sae)} \u00b7 ${nav.join(" \u00b7 ")}</p>`];
    const nTok = Math.round(rec.density * sae.n_tokens);
    if (rec.max > 0) {
      parts.push(`<p class="interp-summary">Fires on <strong>${pct(rec.density)}</strong> of ${sae.n_tokens.toLocaleString()} held-out tokens (${nTok.toLocaleString()} tokens, in ${rec.contexts} of ${sae.n_contexts} contexts). Largest activation <strong>${fmt(rec.max)}</strong>; mean activation where it fires ${fmt(rec.mean)}.</p>`);
    } else {
      parts.push(`<p class="interp-summary">This feature does not fire on any of the ${sae.n_tokens.toLocaleString()} held-out tokens.</p>`);
    }
    if (rec.sinks[0] > 0) parts.push(`<p>Left out: the ${sae.n_massive.toLocaleString()} attention-sink tokens (massive activation norm); it fires on ${rec.sinks[0]} of them, up to ${fmt(rec.sinks[1], 1)}.</p>`);
    if (rec.max > 0) {
      parts.push(`<section id="dash-histogram"><h2>Activation histogram</h2><p>Its non-zero activations on the held-out tokens.</p>${svgBars(rec.hist, 0, rec.max, "activation")}</section>`);
      parts.push(`<section id="dash-top"><h2>Top activations</h2><p>The ${s.n_top} held-out contexts where it fires most strongly, ${s.before} tokens before the peak and ${s.after} after; the shade is the activation (full colour: ${fmt(rec.max)}); hover over a token for its value.</p>${exampleRows(rec, ctxs, [...Array(s.n_top).keys()])}</section>`);
      parts.push(`<section id="dash-quantiles"><h2>Examples across its range</h2>${quantileSections(rec, ctxs, sae) || "<p>It fires in no other context.</p>"}</section>`);
    }
    parts.push(`<section id="dash-lens"><h2>Logit lens</h2><p>The tokens its decoder direction pushes up and down through the direct path to the unembedding (<code>W_dec[f] @ W_U</code>, logits per unit of activation, before the final norm), and the histogram of that effect over the whole vocabulary.</p>${lensTable(rec)}${svgBars(rec.lens_hist, rec.lens_range[0], rec.lens_range[1], "\u0394 logit, all tokens")}</section>`);
    const near = rec.near.map(([g, c]) => `<li>${featureLink(sae, g)} cosine ${fmt(c, 3)}</li>`).join("");
    const best = rec.best.map(([i, g, c, same]) => {
      const o = s.saes[i];
      const own = same === undefined ? "" : `; ${featureLink(o, n, "feature " + n)} of it (same number) ${fmt(same, 3)}`;
      return `<li>${saeName(o)}: ${featureLink(o, g)} cosine ${fmt(c, 3)}${own}</li>`;
    }).join("");
    parts.push(`<section id="dash-neighbours"><h2>Nearest features</h2><p>By the cosine of decoder directions, in this SAE:</p><ol class="interp-near">${near}</ol><p>The best match in each other SAE. ${esc(s.start_note || "")}</p><ul class="interp-best">${best || "<li>none</li>"}</ul></section>`);
    const co = rec.cofire.map(([g, j]) => `<li>${featureLink(sae, g)} Jaccard ${fmt(j, 3)}</li>`).join("");
    parts.push(`<section id="dash-cofire"><h2>Fires with</h2><p>The features whose fired tokens overlap its own most (Jaccard index: tokens both fire on / tokens either fires on).</p>${co ? `<ol class="interp-cofire">${co}</ol>` : "<p>None.</p>"}</section>`);
    parts.push(`<p class="interp-feature-source">Computed on the held-out split of the book's offline corpus by <code>interp_lib.feature_stats</code>; stable address <code>features/${esc(sae.slug)}/${n}.html</code>.</p>`);
    done(el, "ready", parts.join("\n"), { feature: `${sae.slug}/${n}`, renderMs: Math.round(performance.now() - t0) });
    window.scrollTo(0, 0);
  }

  // ---- search

  function parseQuery() {
    const h = decodeURIComponent(location.hash.slice(1)), i = h.indexOf("=");
    return i < 0 ? null : { mode: h.slice(0, i), text: h.slice(i + 1) };
  }
  const result = (sae, n, note) => `<li><a href="${esc(sae.slug)}/${n}.html">${esc(sae.slug)} \u00b7 feature ${n}</a>${note ? " \u00b7 " + note : ""}</li>`;

  async function search() {
    const el = dash(), q = parseQuery();
    if (!q) return;
    const s = store.site;
    document.getElementById("q-mode").value = q.mode;
    document.getElementById("q-text").value = q.text.replace(/^[^/]*\//, "");
    let items = [];
    try {
      if (q.mode === "number") {
        const saes = q.text.includes("/") ? [parseFeature(q.text).sae] : s.saes;
        const n = Number(q.text.replace(/^.*\//, ""));
        if (!Number.isInteger(n) || n < 0) throw new Error(`a feature number is an integer >= 0, got ${JSON.stringify(q.text)}`);
        for (const sae of saes) {
          if (n < sae.d_sae) items.push(result(sae, n, ""));
        }
        if (!items.length) throw new Error(`no SAE has a feature ${n}`);
      } else if (q.mode === "token") {
        const [text, slug] = q.text.split("@");
        const want = text.trim().toLowerCase() || text;
        if (!text) throw new Error("give a token to search for");
        const saes = slug ? [findSae(slug)] : s.saes;
        if (saes.includes(undefined)) throw new Error(`unknown SAE ${slug}`);
        await Promise.all(saes.map((sae) => load(`${sae.slug}/data/search.js`)));
        const hits = [];
        for (const sae of saes) {
          for (const [key, list] of Object.entries(store.tokens[sae.slug])) {
            const exact = key === want;
            if (!exact && !(want.length >= 2 && key.includes(want))) continue;
            for (const [f, count, max] of list) hits.push({ sae, f, count, max, key, exact });
          }
        }
        hits.sort((a, b) => (b.exact - a.exact) || (b.count - a.count) || (b.max - a.max));
        items = hits.slice(0, 50).map((h) => result(h.sae, h.f, `${h.count} of its top ${s.n_top} examples peak on <code>${esc(JSON.stringify(h.key))}</code> (up to ${fmt(h.max)})`));
        if (!items.length) throw new Error(`no feature's top examples peak on a token matching ${JSON.stringify(text)}`);
      } else if (q.mode === "like") {
        const { sae, n } = parseFeature(q.text);
        const rec = await record(sae, n);
        items = rec.near.map(([g, c]) => result(sae, g, `decoder cosine ${fmt(c, 3)}`));
        items.push(...rec.best.map(([i, g, c]) => result(s.saes[i], g, `best match in that SAE (other than feature ${n}), cosine ${fmt(c, 3)}`)));
      } else {
        throw new Error(`unknown mode ${JSON.stringify(q.mode)}: choose number, token or like`);
      }
    } catch (err) {
      done(el, "error", `<p class="interp-error">${esc(err.message)}</p>`, { results: 0 });
      return;
    }
    done(el, "ready", `<ol id="results">${items.join("")}</ol>`, { results: items.length });
  }

  function setupSearch() {
    const sel = document.getElementById("q-sae");
    sel.innerHTML = `<option value="">all SAEs</option>` + store.site.saes.map((s) => `<option value="${esc(s.slug)}">${esc(s.slug)}</option>`).join("");
    document.getElementById("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const mode = document.getElementById("q-mode").value, text = document.getElementById("q-text").value, slug = sel.value;
      if (mode === "token") location.hash = `token=${encodeURIComponent(text)}${slug ? "@" + slug : ""}`;
      else location.hash = `${mode}=${slug ? slug + "/" : ""}${encodeURIComponent(text)}`;
    });
    window.addEventListener("hashchange", search);
    search();
  }

  function start() {
    if (!store.site) {
      done(dash(), "error", "<p class=\"interp-error\">The dashboard data (dashboards.js) is missing: build the book with feature pages.</p>");
      return;
    }
    if (document.getElementById("search-form")) setupSearch();
    else {
      window.addEventListener("hashchange", () => showFeature().catch(fail));
      showFeature().catch(fail);
    }
  }
  const fail = (err) => done(dash(), "error", `<p class="interp-error">${esc(err.message)}</p>`);
  window.addEventListener("DOMContentLoaded", () => { if (!store.site) start(); });
})();
