#!/usr/bin/env python3
"""Drive the live pages (lens.html, steer.html) of the built site in headless Chromium, offline,
and compare what they compute with interp_lib.

    python tests/live_pages_check.py [--html _build/html] [--texts 8] [--bench] [--inputs-only]
    python tests/live_pages_check.py --url http://127.0.0.1:8000/   # a site make serve serves

The site is served on loopback by a static server (the pages need no server-side code) inside a
network namespace of its own (`unshare -n`: nothing else is reachable), and Chromium is driven
through the DevTools protocol: each page gets its inputs from the URL query (later inputs through
its form, as a reader types them), and the check waits for `document.body.dataset.state` to be
"done", then reads the results the page wrote into the DOM.

* lens.html: for probe texts (interp_lib.data.probe_texts, one per category and more) and all five
  shipped SAEs, the browser's tokens equal TransformerLens's, and on at least 95% of the tokens
  (BOS left out) the top feature equals `encode_texts`'s and its activation is within 5%;
* steer.html: greedy generation, steered and unsteered, 16 tokens on three prompts, equals
  `steering.generate_steered` / `steering.generate` token for token (compared as text, cut at
  EOS), and the steering changed the text;
* every field and query parameter of both pages (live.js's fieldRules) refuses invalid values of
  each kind (out of range, negative, not a number, NaN, empty, blank, too long, more tokens than
  the context; unknown and repeated parameters), given in the query string and typed into the
  form: each ends in data-state "error" with one line naming the field, the form keeps what was
  given, and the model is not loaded for it; valid edge values (first and last feature, strength
  0, one new token, the largest seed, a text of many scripts) end in "done" and agree with
  interp_lib; the limits are shown next to the fields (--inputs-only: these checks alone);
* no uncaught exception and no console error on either page;
* what each page downloads is at most 300 MB (the lens with all five SAEs picked), and no file is
  over 95 MB.

--bench prints the timings the issue budgets (features of a 64-token text after the model is
loaded; tokens/s of the bench) and the download sizes. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / ".ci")]

from browser_check import FLAGS, find_chromium  # noqa: E402  (tests/ is this script's folder)

AGREE = 0.95
PAGE_BUDGET = 300e6
"""What one page may download in all (the model, the SAE files it reads, scripts, WebAssembly)."""
FILE_BUDGET = 95e6
"""The largest file a page may download (static hosts cap file sizes)."""
ACTIVATION_TOLERANCE = 0.05
STEER_TOKENS = 16
STEER_PROMPTS = (
    "My favourite thing to do on a Sunday is",
    "The report concludes that",
    "def load_config(path):",
)
STEER_FEATURE, STEER_STRENGTH = 1000, 1.5
BENCH_TOKENS = 64
PAGE_TIMEOUT = 600


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
    }

    def log_message(self, *args):  # quiet
        pass


def serve(html: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(html))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class Page:
    """One Chromium tab driven over the DevTools protocol (tornado's websocket client)."""

    def __init__(self, ws):
        self.ws, self.next_id, self.errors = ws, 0, []

    @classmethod
    async def open(cls, port: int) -> "Page":
        from tornado.websocket import websocket_connect

        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                    targets = [t for t in json.load(r) if t["type"] == "page"]
                if targets:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        ws = await websocket_connect(targets[0]["webSocketDebuggerUrl"], max_message_size=1 << 28)
        page = cls(ws)
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            await page.call(method)
        return page

    async def call(self, method: str, **params):
        self.next_id += 1
        me = self.next_id
        await self.ws.write_message(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d["text"]
            self.errors.append(f"uncaught: {text}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            self.errors.append(f"console.{p['type']}: {text[:300]}")
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(f"log: {p['entry']['text'][:300]} ({p['entry'].get('url', '')})")

    async def js(self, expression: str):
        res = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_done(self, timeout: float = PAGE_TIMEOUT) -> float:
        """Wait for data-state done (raise on error); the seconds it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            state = await self.js("document.body ? document.body.dataset.state : null")
            if state == "done":
                return time.monotonic() - t0
            if state == "error":
                raise RuntimeError(await self.js("document.getElementById('error').textContent"))
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the page was not done within {timeout} s")

    async def wait_final(self, timeout: float = PAGE_TIMEOUT) -> tuple[str | None, str]:
        """Wait for data-state done or error: (state, the error line); (None, "") on timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            state = await self.js("document.body ? document.body.dataset.state : null")
            if state in ("done", "error"):
                return state, await self.js("document.getElementById('error').textContent")
            await asyncio.sleep(0.05)
        return None, ""

    async def visit(self, url: str, timeout: float = PAGE_TIMEOUT) -> tuple[str | None, str]:
        """Navigate to `url` and wait for its final state (not the previous page's)."""
        await self.js("document.body && (document.body.dataset.state = 'left'); 1")
        await self.call("Page.navigate", url=url)
        return await self.wait_final(timeout)

    async def type_into(self, field: str, text: str) -> None:
        """Replace what field `field` holds with `text`, typed (as a paste), as a reader would."""
        await self.js(f"document.getElementById({json.dumps(field)}).focus();"
                      f"document.getElementById({json.dumps(field)}).select(); 1")
        if text:
            await self.call("Input.insertText", text=text)
        else:
            await self.js("document.execCommand('delete'); 1")

    async def press_go(self, timeout: float = PAGE_TIMEOUT) -> tuple[str | None, str]:
        """Press the page's button; its final state (None: there was none within `timeout`)."""
        await self.js("document.body.dataset.state = 'pressed';"
                      "document.getElementById('go').click(); 1")
        return await self.wait_final(timeout)

    async def goto(self, url: str) -> float:
        t0 = time.monotonic()
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(0.5)
        await self.wait_done()
        return time.monotonic() - t0


LENS_ROWS = """[...document.querySelectorAll('#lens-results tbody tr')].map(r => [
  +r.dataset.tokenIndex, +r.dataset.tokenId, +r.dataset.feature, +r.dataset.activation])"""


async def lens_fill(page: Page, sae: str, text: str) -> float:
    """Run the lens again through its form (as a reader would); seconds until done (counted from
    the submit: onnxruntime-web computes on the page's thread, so the call itself may wait)."""
    t0 = time.monotonic()
    await page.js(
        f"document.getElementById('sae').value = {json.dumps(sae)};"
        f"document.getElementById('text').value = {json.dumps(text)};"
        "document.getElementById('form').requestSubmit(); 1"
    )
    await page.wait_done()
    return time.monotonic() - t0


def compare_lens(model, sae, text: str, rows) -> tuple[int, int, int, list[str]]:
    """(tokens compared, top feature agrees, activation also within 5%, problems)."""
    import torch

    from interp_lib import encode_texts

    enc = encode_texts(model, sae, [text])
    ids = model.to_tokens(text, prepend_bos=True)[0, 1:].tolist()
    top = {}
    got_ids = {}
    for index, token_id, feature, act in rows:
        got_ids[index] = token_id
        top.setdefault(index, (feature, act))  # rows come rank 1 first
    problems = []
    if [got_ids.get(i) for i in range(len(ids))] != ids:
        problems.append(f"tokens differ from TransformerLens's for {text[:40]!r}")
    acts = enc.acts[0]
    agree = close = 0
    for i in range(len(ids)):
        ref_value, ref_feature = torch.max(acts[i], dim=0)
        if i not in top:
            agree += float(ref_value) <= 0
            close += float(ref_value) <= 0
            continue
        feature, act = top[i]
        if feature == int(ref_feature):
            agree += 1
            close += abs(act - float(ref_value)) <= ACTIVATION_TOLERANCE * abs(float(ref_value))
    return len(ids), agree, close, problems


async def check_lens(page: Page, base: str, model, texts: list[str], bench: dict) -> list[str]:
    from interp_lib import RELEASES, load_sae

    problems = []
    pairs = [(r, s) for r, info in RELEASES.items() for s in info.sae_ids]
    first = True
    for release, sae_id in pairs:
        sae = load_sae(release, sae_id)
        key = f"{release}/{sae_id}"
        n = agree = close = 0
        for text in texts:
            if first:
                q = urllib.parse.urlencode({"sae": key, "text": text}, quote_via=urllib.parse.quote)
                seconds = await page.goto(f"{base}lens.html?{q}")
                bench["lens: first load and run (s)"] = round(seconds, 1)
                first = False
            else:
                await lens_fill(page, key, text)
            rows = await page.js(LENS_ROWS)
            k, a, c, p = compare_lens(model, sae, text, rows)
            n, agree, close, problems = n + k, agree + a, close + c, problems + p
        line = (f"lens {key}: top feature agrees on {agree}/{n} tokens ({agree / n:.1%}), "
                f"and within {ACTIVATION_TOLERANCE:.0%} on {close}/{n} ({close / n:.1%})")
        print(f"  {'ok' if close / n >= AGREE else 'FAIL'}  {line}")
        if close / n < AGREE:
            problems.append(line)
    return problems


async def check_steer(page: Page, base: str, model) -> list[str]:
    from interp_lib import load_sae
    from interp_lib.interventions.steering import generate, generate_steered, typical_norm
    from interp_lib.site.live_site import STEER_SAE

    sae = load_sae(*STEER_SAE)
    ref = typical_norm(model, sae)
    problems = []
    for i, prompt in enumerate(STEER_PROMPTS):
        params = {"feature": STEER_FEATURE, "strength": STEER_STRENGTH, "tokens": STEER_TOKENS,
                  "prompt": prompt}
        if i == 0:
            q = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
            await page.goto(f"{base}steer.html?{q}")
        else:
            await page.js(f"document.getElementById('prompt').value = {json.dumps(prompt)};"
                          "document.getElementById('form').requestSubmit(); 1")
            await page.wait_done()
        got = await page.js("[...['steer-output', 'plain-output']].map(id => "
                            "document.getElementById(id).dataset.tokens)")
        steered_ids, plain_ids = ([int(t) for t in s.split(",") if t] for s in got)
        want_steered = generate_steered(model, sae, STEER_FEATURE, STEER_STRENGTH, prompt,
                                        max_new_tokens=STEER_TOKENS, ref_norm=ref)
        want_plain = generate(model, prompt, max_new_tokens=STEER_TOKENS)
        decode = model.tokenizer.decode
        for name, ids, want in (("steered", steered_ids, want_steered),
                                ("plain", plain_ids, want_plain)):
            ok = decode(ids) == want
            print(f"  {'ok' if ok else 'FAIL'}  steer {name} {prompt!r}: {decode(ids)!r}"
                  + ("" if ok else f" != interp_lib's {want!r}"))
            if not ok:
                problems.append(f"steer {name} {prompt!r} differs from interp_lib")
        if want_steered == want_plain:
            problems.append(f"steering feature {STEER_FEATURE} changed nothing on {prompt!r}")
    return problems


MANY_SCRIPTS = ("Der Hund läuft über die Straße — 東京は今日晴れ。 Москва, مرحبا بالعالم, नमस्ते "
                "🐕 ∑x² = λ, Ελληνικά, 한국어")
"""A valid text of many scripts (Latin with diacritics, CJK, Cyrillic, Arabic, Devanagari, emoji,
math, Greek, Hangul)."""
INPUT_TIMEOUT = 20
"""Seconds a refused input may take to reach its error state (the model is not loaded for it)."""


def invalid_inputs(limits: dict, d_sae: int) -> dict[str, list[str]]:
    """Values each field must refuse, of every kind: out of range, negative, not a number, NaN,
    empty, blank, too long, more tokens than the context."""
    too_long = "a" * (limits["textChars"] + 1)
    too_many_tokens = "🐕" * limits["contextTokens"]  # within the characters, 3 tokens each
    text = ["", "   ", too_long, too_many_tokens]
    return {
        "feature": [str(d_sae), "9999999", "-1", "abc", "NaN", "", "1.5"],
        "strength": ["abc", "NaN", "", "Infinity", "1e999", str(limits["strength"] * 10)],
        "tokens": ["0", "-1", str(limits["newTokens"] + 1), "abc", "NaN", "", "2.5"],
        "temperature": ["-0.1", "abc", "NaN", "", "Infinity"],
        "seed": ["-1", "abc", "NaN", "", "1.5", str(limits["seed"] + 1)],
        "prompt": text,
        "text": text,
        "sae": ["nope", ""],
    }


STEER_FIELDS = ("prompt", "feature", "strength", "tokens", "temperature", "seed")
LENS_FIELDS = ("text", "sae")


def refused(how: str, field: str, value: str, state, line: str, kept) -> list[str]:
    """The problems with one refusal: it must end in "error", one line that names the field, and
    the form must keep the value given."""
    what = f"{how} {field}={value[:30]!r}{'...' if len(value) > 30 else ''}"
    if state != "error":
        return [f"inputs: {what} ended in {state or 'no final state'}, not the error state"]
    if not line.startswith(f"{field}: ") or "\n" in line:
        return [f"inputs: {what}: the error line does not name the field: {line[:120]!r}"]
    if kept is not None and kept != value:
        return [f"inputs: {what}: the form holds {kept[:30]!r} instead of what was given"]
    return []


async def model_untouched(page: Page, what: str) -> list[str]:
    """A refused input must not start loading the model (it is refused before, cheaply)."""
    started = await page.js("!document.getElementById('progress').hidden || "
                            "document.getElementById('progress-label').textContent !== ''")
    return [f"inputs: {what} started loading the model"] if started else []


async def check_limits_shown(page: Page, limits: dict, d_sae: int, fields) -> list[str]:
    """The limits written next to the fields (data-limit) name the numbers they are."""
    shown = await page.js("Object.fromEntries([...document.querySelectorAll('[data-limit]')]"
                          ".map(e => [e.dataset.limit, e.textContent]))")
    want = {"text": str(limits["textChars"]), "prompt": str(limits["textChars"]),
            "context": str(limits["contextTokens"]), "tokens": str(limits["newTokens"]),
            "feature": str(d_sae - 1), "seed": str(limits["seed"]), "sae": None}
    problems = []
    for f in [*fields, "context"]:
        if f in want and want[f] and want[f] not in shown.get(f, ""):
            problems.append(f"inputs: the limit next to {f} ({shown.get(f)!r}) does not say "
                            f"{want[f]}")
    return problems


async def check_refusals(page: Page, base: str, name: str, fields, limits: dict,
                         d_sae: int) -> tuple[list[str], int]:
    """Each invalid value of each field of page `name`, through the query string (one page each)
    and then typed into the form; (problems, refusals checked)."""
    bad = invalid_inputs(limits, d_sae)
    problems, n = [], 0
    for field in fields:
        for value in bad[field]:
            q = urllib.parse.urlencode({field: value}, quote_via=urllib.parse.quote)
            state, line = await page.visit(f"{base}{name}?{q}", INPUT_TIMEOUT)
            kept = await page.js(f"document.getElementById({json.dumps(field)}).value")
            problems += refused("query", field, value, state, line, kept)
            problems += await model_untouched(page, f"{name}?{field}={value[:20]!r}")
            n += 1
    for query, field in ((f"{fields[0]}=x&bogus=1", "query"), (f"{fields[1]}=1&{fields[1]}=2",
                                                                fields[1])):
        state, line = await page.visit(f"{base}{name}?{query}", INPUT_TIMEOUT)
        problems += refused("query", field, query, state, line, None)
        n += 1
    # Typed into the form (on a page whose first field was refused), the others valid.
    await page.visit(f"{base}{name}?{fields[0]}=", INPUT_TIMEOUT)
    problems += await check_limits_shown(page, limits, d_sae, fields)
    defaults = await page.js(f"Object.fromEntries({json.dumps(list(fields))}"
                             ".map(f => [f, document.getElementById(f).defaultValue ?? '']))")
    for field in fields:
        if field == "sae":
            continue  # a <select>: it offers the shipped SAEs alone (the query case checks it)
        for value in bad[field]:
            await page.type_into(field, value)
            state, line = await page.press_go(INPUT_TIMEOUT)
            kept = await page.js(f"document.getElementById({json.dumps(field)}).value")
            problems += refused("typed", field, value, state, line, kept)
            n += 1
        if not any("started loading" in p for p in problems):  # once: it stays loaded
            problems += await model_untouched(page, f"{name} typed {field}")
        await page.type_into(field, defaults[field])
    return problems, n


async def check_refusals_all(page: Page, base: str, model) -> list[str]:
    """Invalid inputs of both pages refused, cheaply: before the model loads."""
    from interp_lib import load_sae
    from interp_lib.site.live_site import STEER_SAE

    d_sae = int(load_sae(*STEER_SAE).cfg.d_sae)
    t0 = time.monotonic()
    await page.visit(f"{base}lens.html?text=", INPUT_TIMEOUT)
    limits = await page.js("import('./live/live.js').then(m => m.LIMITS)")
    if not limits:
        return ["inputs: live.js exports no LIMITS (the pages' limits)"]
    problems, n = [], 0
    if limits["contextTokens"] != model.cfg.n_ctx:
        problems.append(f"inputs: the pages' context is {limits['contextTokens']} tokens, the "
                        f"library's {model.cfg.n_ctx}")
    many = "🐕" * limits["contextTokens"]
    if model.to_tokens(many, truncate=False).shape[1] <= limits["contextTokens"]:
        raise AssertionError("the too-many-tokens text fits the context: make it longer")
    for name, fields in (("lens.html", LENS_FIELDS), ("steer.html", STEER_FIELDS)):
        p, k = await check_refusals(page, base, name, fields, limits, d_sae)
        problems, n = problems + p, n + k
    print(f"  {'ok' if not problems else 'FAIL'}  inputs: {n} invalid inputs refused with the "
          f"field named ({len(problems)} problems), in {time.monotonic() - t0:.0f} s")
    return problems


async def check_lens_edges(page: Page, base: str, model, via_query: bool) -> list[str]:
    """The lens on a text of many scripts, through the query (a fresh page) or typed into the
    form of a page whose model is loaded; it agrees with interp_lib."""
    from interp_lib import load_sae
    from interp_lib.site.live_site import STEER_SAE, sae_key

    key = sae_key(*STEER_SAE)
    if via_query:
        q = urllib.parse.urlencode({"text": MANY_SCRIPTS, "sae": key}, quote_via=urllib.parse.quote)
        state, line = await page.visit(f"{base}lens.html?{q}")
    else:
        await page.type_into("text", MANY_SCRIPTS)
        await page.js(f"document.getElementById('sae').value = {json.dumps(key)}; 1")
        state, line = await page.press_go()
    if state != "done":
        return [f"inputs: the lens on a text of many scripts ended in {state}: {line}"]
    k, _, close, p = compare_lens(model, load_sae(*STEER_SAE), MANY_SCRIPTS,
                                  await page.js(LENS_ROWS))
    ok = not p and close / k >= AGREE
    print(f"  {'ok' if ok else 'FAIL'}  inputs: lens on many scripts agrees on {close}/{k} tokens")
    return p + ([] if ok else ["inputs: the lens on many scripts differs from interp_lib"])


async def check_steer_edges(page: Page, base: str, model, via_query: bool) -> list[str]:
    """The bench at the first and last feature, strength 0, one new token and the largest seed,
    typed into the form of a page whose model is loaded (the first through the query, on a fresh
    page, if `via_query`); greedy runs equal interp_lib's, a sampled one repeats itself."""
    from interp_lib import load_sae
    from interp_lib.interventions.steering import generate, generate_steered, typical_norm
    from interp_lib.site.live_site import STEER_SAE

    sae = load_sae(*STEER_SAE)
    d_sae = int(sae.cfg.d_sae)
    seed_max = str(2**32 - 1)
    ref = typical_norm(model, sae)
    problems = []
    edges = [  # (feature, strength, tokens, temperature, seed)
        (0, "0", 1, "0", "0"),
        (d_sae - 1, "-1.5", 3, "0", "0"),
        (STEER_FEATURE, "1.5", 2, "0.8", seed_max),
    ]
    for i, (feature, strength, tokens, temperature, seed) in enumerate(edges):
        values = {"prompt": MANY_SCRIPTS, "feature": str(feature), "strength": strength,
                  "tokens": str(tokens), "temperature": temperature, "seed": seed}
        if via_query and i == 0:
            q = urllib.parse.urlencode(values, quote_via=urllib.parse.quote)
            state, line = await page.visit(f"{base}steer.html?{q}")
        else:
            for f, v in values.items():
                await page.type_into(f, v)
            state, line = await page.press_go()
        what = f"steer feature={feature} strength={strength} tokens={tokens} t={temperature}"
        if state != "done":
            problems.append(f"inputs: {what} ended in {state}: {line}")
            continue
        got = await page.js("['steer-output', 'plain-output'].map(id => "
                            "document.getElementById(id).dataset.tokens)")
        steered, plain = ([int(t) for t in s.split(",") if t] for s in got)
        if temperature != "0":
            again_state, _ = await page.press_go()
            again = await page.js("document.getElementById('steer-output').dataset.tokens")
            ok = again_state == "done" and again == got[0] and len(steered) <= tokens
            print(f"  {'ok' if ok else 'FAIL'}  inputs: {what} seed={seed}: repeatable")
            problems += [] if ok else [f"inputs: {what} seed={seed} is not repeatable"]
            continue
        decode = model.tokenizer.decode
        want_s = generate_steered(model, sae, feature, float(strength), MANY_SCRIPTS,
                                  max_new_tokens=tokens, ref_norm=ref)
        want_p = generate(model, MANY_SCRIPTS, max_new_tokens=tokens)
        ok = decode(steered) == want_s and decode(plain) == want_p
        diff = f" != interp_lib's {want_s!r} (plain {decode(plain)!r}, {want_p!r})"
        line = f"  {'ok' if ok else 'FAIL'}  inputs: {what}: {decode(steered)!r}"
        print(line + ("" if ok else diff))
        problems += [] if ok else [f"inputs: {what} differs from interp_lib"]
    return problems


async def run_bench(page: Page, base: str, model, bench: dict) -> None:
    from interp_lib.data.probes import probe_texts

    text = " ".join(p.text for p in probe_texts("conversational"))
    ids = model.to_tokens(text, prepend_bos=False)[0, :BENCH_TOKENS]
    text64 = model.tokenizer.decode(ids)
    sae = "smollm2-135m-res/blocks.15.hook_resid_pre"
    q = urllib.parse.urlencode({"sae": sae, "text": text64}, quote_via=urllib.parse.quote)
    bench["lens: page opened, model loaded (fresh profile: from the site), first text (s)"] = round(
        await page.goto(f"{base}lens.html?{q}"), 1)
    times = []
    for _ in range(3):
        seconds = await lens_fill(page, sae, text64)
        times.append(seconds)
    n = await page.js("+document.getElementById('lens-results').dataset.tokens")
    fwd = await page.js("+document.getElementById('lens-results').dataset.forwardMs")
    encms = await page.js("+document.getElementById('lens-results').dataset.encodeMs")
    bench[f"lens: features of a {n}-token text, model loaded (s, best of 3)"] = round(min(times), 2)
    bench["lens: of which the model's forward pass (ms, last run)"] = fwd
    bench["lens: of which the SAE encoder in JavaScript (ms, last run)"] = encms
    q = urllib.parse.urlencode({"feature": STEER_FEATURE, "strength": STEER_STRENGTH,
                                "tokens": 32, "prompt": STEER_PROMPTS[0]},
                               quote_via=urllib.parse.quote)
    await page.goto(f"{base}steer.html?{q}")
    bench["steer: tokens/s (steered and unsteered together, 32 + 32 tokens, with the cache)"] = \
        await page.js("+document.getElementById('steer-output').dataset.tokensPerSecond")


async def drive(args, base: str) -> int:
    from interp_lib import load_model
    from interp_lib.data.probes import CATEGORIES, probe_texts
    from interp_lib.site.live_site import download_bytes

    chromium = find_chromium()
    profile = tempfile.mkdtemp(prefix="chromium-live-")
    port_file = Path(profile) / "DevToolsActivePort"
    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-allow-origins=*", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(150):
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        page = await Page.open(port)
        model = load_model()
        texts = [t.text for c in CATEGORIES for t in probe_texts(c)[: max(1, args.texts // 7)]]
        texts = texts[: args.texts]
        bench: dict = {}
        problems = []
        if not args.bench_only:
            # The valid edge values on the pages the lens and bench checks loaded (their model
            # loaded once), then the refusals (cheap: each refused before the model loads).
            fresh = args.inputs_only
            if not fresh:
                t0 = time.monotonic()
                problems += await check_lens(page, base, model, texts, bench)
                print(f"  lens: {len(texts)} texts x 5 SAEs in {time.monotonic() - t0:.0f} s")
            t0 = time.monotonic()
            problems += await check_lens_edges(page, base, model, via_query=fresh)
            print(f"  inputs: the lens's edge values in {time.monotonic() - t0:.0f} s")
            if not fresh:
                t0 = time.monotonic()
                problems += await check_steer(page, base, model)
                print(f"  steer: {len(STEER_PROMPTS)} prompts in {time.monotonic() - t0:.0f} s")
            t0 = time.monotonic()
            problems += await check_steer_edges(page, base, model, via_query=fresh)
            print(f"  inputs: the bench's edge values in {time.monotonic() - t0:.0f} s")
            problems += await check_refusals_all(page, base, model)
        sizes = download_bytes(args.html)
        for page_name, size in sizes.items():
            limit = FILE_BUDGET if page_name == "largest file" else PAGE_BUDGET
            if size > limit:
                problems.append(f"download budget: {page_name} is {size / 1e6:.1f} MB, over "
                                f"{limit / 1e6:.0f} MB")
        if args.bench or args.bench_only:
            await run_bench(page, base, model, bench)
            bench.update({f"download, {k} (MB)": round(v / 1e6, 1) for k, v in sizes.items()})
            print("bench (headless Chromium, one WebAssembly thread):")
            for k, v in bench.items():
                print(f"  {k}: {v}")
        problems += page.errors
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
    for p in problems:
        print(f"  FAIL  {p}")
    print(f"live-pages check: {'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    p.add_argument("--texts", type=int, default=14, help="probe texts per SAE")
    p.add_argument("--bench", action="store_true", help="also print the timings and sizes")
    p.add_argument("--bench-only", action="store_true", help="the timings and sizes alone")
    p.add_argument("--inputs-only", action="store_true",
                   help="the checks of the pages' inputs alone (invalid ones refused, edges done)")
    p.add_argument("--online", action="store_true", help="(inside) skip cutting the network")
    p.add_argument("--url", default=None,
                   help="drive a site a server already serves (make serve: http://127.0.0.1:8000/)"
                        " instead of serving --html here; the network is not cut")
    args = p.parse_args(argv)
    args.html = args.html.resolve()
    if not (args.html / "lens.html").is_file():
        print(f"live-pages check: no lens.html in {args.html}: the site was built without the "
              "live pages (they need node and `npm ci`: make env)", file=sys.stderr)
        return 1
    if args.url:
        return asyncio.run(drive(args, args.url.rstrip("/") + "/"))
    if not args.online:
        if os.environ.get("INTERP_LIVE_CHECK_INSIDE") != "1":
            cmd = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]
            env = {**os.environ, "INTERP_LIVE_CHECK_INSIDE": "1"}
            return subprocess.run([*cmd, sys.executable, *sys.argv], env=env).returncode
        from buildlib import network_is_cut

        if not network_is_cut("pypi.org", "live-pages check"):
            return 1
        print("live-pages check: offline (own network namespace, loopback only)")
    server, base = serve(args.html)
    try:
        return asyncio.run(drive(args, base))
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
