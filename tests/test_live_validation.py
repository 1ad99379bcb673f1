"""The live pages' input checks (interp_lib/site/live/live.js: fieldRules, validate, readQuery,
checkContext), run with node on stand-ins for the browser and the vendor modules: each field's
range is exact (its first and last values accepted, one past them refused), nothing invalid is
replaced by a default, and every refusal is one line naming the field, the value and the range."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

LIVE = Path(__file__).resolve().parent.parent / "interp_lib" / "site" / "live"
D_SAE = 4608
SAES = {
    "saes": [{"key": "r/blocks.3.hook_resid_pre"}, {"key": "r/blocks.15.hook_resid_pre"}],
    "steer": {"d_sae": D_SAE},
}

STUBS = {
    "vendor/ort.wasm.min.mjs": "export const env = { wasm: {} }; export class Tensor {}\n"
    "export const InferenceSession = {};\n",
    "vendor/tokenizers.min.mjs": "export class Tokenizer {}\n",
}

RUNNER = """
globalThis.document = { body: { dataset: {}, insertAdjacentHTML() {} } };
globalThis.location = { search: "" };
const live = await import("./live.js");
const rules = live.fieldRules(SAES);
const out = { limits: live.LIMITS, ranges: {}, cases: [] };
for (const [f, r] of Object.entries(rules)) out.ranges[f] = r.range;
for (const [field, raw] of CASES) {
  try { out.cases.push({ field, raw, ok: true, value: rules[field].parse(field, raw) }); }
  catch (err) { out.cases.push({ field, raw, ok: false, error: err.message, name: err.field }); }
}
out.queries = QUERIES.map((q) => live.readQuery(["feature", "prompt"], q));
const ctx = [];
for (const [n, extra] of [[2048, 0], [2049, 0], [2000, 48], [2000, 49]]) {
  try { live.checkContext("prompt", "x", new Array(n), extra); ctx.push(null); }
  catch (err) { ctx.push(err.message); }
}
out.context = ctx;
console.log(JSON.stringify(out));
"""


def run_node(tmp_path: Path, cases: list[tuple[str, str]], queries: list[str]) -> dict:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    shutil.copyfile(LIVE / "live.js", tmp_path / "live.js")
    for name, text in STUBS.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    script = (
        RUNNER.replace("SAES", json.dumps(SAES))
        .replace("CASES", json.dumps(cases))
        .replace("QUERIES", json.dumps(queries))
    )
    (tmp_path / "run.mjs").write_text(script)
    res = subprocess.run(
        ["node", "run.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


VALID = [
    ("feature", "0", 0),
    ("feature", str(D_SAE - 1), D_SAE - 1),
    ("feature", " 12 ", 12),
    ("strength", "0", 0),
    ("strength", "-2.5", -2.5),
    ("strength", "1e3", 1000),
    ("strength", "-1000", -1000),
    ("strength", ".5", 0.5),
    ("tokens", "1", 1),
    ("tokens", "256", 256),
    ("temperature", "0", 0),
    ("temperature", "0.7", 0.7),
    ("temperature", "1e300", 1e300),
    ("seed", "0", 0),
    ("seed", "4294967295", 4294967295),
    ("prompt", "x", "x"),
    ("prompt", " padded ", " padded "),
    ("text", "東京 Москва مرحبا 🐕", "東京 Москва مرحبا 🐕"),
    ("text", "🐕" * 8000, "🐕" * 8000),
    ("sae", "r/blocks.15.hook_resid_pre", "r/blocks.15.hook_resid_pre"),
]
INVALID = [  # (field, raw, what the message says)
    ("feature", str(D_SAE), "is out of range: an integer from 0 to 4607"),
    ("feature", "-1", "is out of range"),
    ("feature", "9999", "is out of range"),
    ("feature", "99999999999999999999", "is out of range"),
    ("feature", "abc", "is not an integer"),
    ("feature", "1.5", "is not an integer"),
    ("feature", "NaN", "is not an integer"),
    ("feature", "", "is empty"),
    ("feature", "0x10", "is not an integer"),
    ("feature", "1e2", "is not an integer"),
    ("strength", "NaN", "is not a number"),
    ("strength", "Infinity", "is not a number"),
    ("strength", "1e999", "is out of range"),
    ("strength", "1000.5", "is out of range"),
    ("strength", "abc", "is not a number"),
    ("strength", "", "is empty"),
    ("strength", "1,5", "is not a number"),
    ("tokens", "0", "is out of range: an integer from 1 to 256"),
    ("tokens", "257", "out of range"),
    ("tokens", "-1", "is out of range"),
    ("tokens", "2.5", "is not an integer"),
    ("tokens", "", "is empty"),
    ("tokens", "NaN", "is not an integer"),
    ("temperature", "-0.1", "is out of range: a finite number >= 0"),
    ("temperature", "NaN", "is not a number"),
    ("temperature", "Infinity", "is not a number"),
    ("temperature", "1e999", "is out of range"),
    ("temperature", "", "is empty"),
    ("seed", "-1", "is out of range: an integer from 0 to 4294967295"),
    ("seed", "4294967296", "is out of range"),
    ("seed", "1.5", "is not an integer"),
    ("seed", "abc", "is not an integer"),
    ("seed", "", "is empty"),
    ("prompt", "", "is empty: a text of 1 to 8000 characters"),
    ("prompt", "  \n", "is blank"),
    ("prompt", "a" * 8001, "(8001 characters) is too long"),
    ("text", "🐕" * 8001, "(8001 characters) is too long"),
    ("text", "", "is empty"),
    ("sae", "nope", "is not a shipped SAE: one of the shipped SAEs: r/blocks.3.hook_resid_pre, "),
    ("sae", "", "is not a shipped SAE"),
]


def test_each_field_takes_its_range_and_refuses_the_rest(tmp_path):
    cases = [(f, raw) for f, raw, _ in VALID] + [(f, raw) for f, raw, _ in INVALID]
    queries = ["?feature=3&prompt=hi", "?feture=3", "?feature=1&feature=2", ""]
    out = run_node(tmp_path, cases, queries)
    assert out["limits"] == {
        "textChars": 8000,
        "contextTokens": 2048,
        "newTokens": 256,
        "strength": 1000,
        "seed": 4294967295,
    }
    assert out["ranges"]["feature"] == f"an integer from 0 to {D_SAE - 1}"
    assert out["ranges"]["tokens"] == "an integer from 1 to 256"
    got = out["cases"]
    for (field, raw, want), case in zip(VALID, got):
        assert case["ok"], f"{field}={raw!r} refused: {case.get('error')}"
        assert case["value"] == want, f"{field}={raw!r} read as {case['value']!r}"
    for (field, raw, want), case in zip(INVALID, got[len(VALID) :]):
        assert not case["ok"], f"{field}={raw!r} accepted as {case.get('value')!r}"
        msg = case["error"]
        assert case["name"] == field and msg.startswith(f"{field}: "), msg
        assert want in msg, f"{field}={raw!r}: {msg!r} does not say {want!r}"
        assert "\n" not in msg and len(msg) < 300, msg
        assert json.dumps(raw[:40], ensure_ascii=False) in msg or raw[:40] in msg, msg
    assert got[len(VALID)]["error"] == 'feature: "4608" is out of range: an integer from 0 to 4607'


def test_the_query_takes_known_parameters_once_and_the_context_is_counted(tmp_path):
    out = run_node(
        tmp_path,
        [],
        ["?feature=3&prompt=h%C3%A9", "?feture=3", "?feature=1&feature=2", "", "?prompt="],
    )
    ok, unknown, twice, empty, blank = out["queries"]
    assert ok == {"values": {"feature": "3", "prompt": "hé"}, "error": None}
    assert unknown["error"] == 'query: "feture" is not a parameter of this page: feature, prompt'
    assert twice["error"].startswith("feature: given more than once")
    assert empty == {"values": {}, "error": None}
    assert blank == {"values": {"prompt": ""}, "error": None}  # refused on submit, as empty
    fits, over, fits_with_new, over_with_new = out["context"]
    assert fits is None and fits_with_new is None
    assert (
        over == 'prompt: "x" is 2049 tokens with BOS: at most 2048 tokens (the model\'s '
        "context on this page)"
    )
    assert over_with_new.startswith(
        'prompt: "x" is 2000 tokens with BOS: at most 2048 tokens with the 49 new ones'
    )
