"""BENCHMARKS.md is what .ci/benchmarks.py renders from the records in benchmarks/, never typed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))

import benchmarks  # noqa: E402  (.ci/benchmarks.py)


def test_benchmarks_page_is_rendered_from_its_records():
    assert benchmarks.BENCH["quick"].is_file(), "record one: make benchmarks"
    assert (ROOT / "BENCHMARKS.md").read_text() == benchmarks.render(), (
        "BENCHMARKS.md differs from its records: python .ci/benchmarks.py render"
    )


def test_every_measurement_names_its_machine_and_commit():
    for path in benchmarks.RECORDS.glob("*.json"):
        rec = json.loads(path.read_text())
        for field in ("date", "commit", "cpu", "cores"):
            assert rec.get(field), f"{path.name}: no {field}"
    text = benchmarks.render()
    assert "GFLOP/s" in text and "commit" in text


def test_render_fails_loudly_on_a_record_without_its_machine(tmp_path, monkeypatch):
    rec = json.loads(benchmarks.BENCH["quick"].read_text())
    del rec["cpu"]
    bad = tmp_path / "bench-quick.json"
    bad.write_text(json.dumps(rec))
    monkeypatch.setitem(benchmarks.BENCH, "quick", bad)
    monkeypatch.setitem(benchmarks.BENCH, "full", tmp_path / "none.json")
    monkeypatch.setattr(benchmarks, "TIMES", tmp_path / "none.json")
    with pytest.raises(KeyError):
        benchmarks.render()
