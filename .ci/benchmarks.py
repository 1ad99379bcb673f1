"""BENCHMARKS.md, regenerated from measurements, never edited by hand.

    python .ci/benchmarks.py bench [--full]        # python -m interp_lib bench --json, recorded
    python .ci/benchmarks.py times [--make-test S] [--make-rehearse S]
                                                    # chapter times of the last `make test` and
                                                    # `make rehearse` (their executed notebooks)
    python .ci/benchmarks.py render [--check]       # BENCHMARKS.md from benchmarks/*.json

Each record (``benchmarks/bench-quick.json``, ``benchmarks/bench-full.json``,
``benchmarks/times.json``) carries the date, the commit and the machine (CPU model, cores) it was
measured on. Chapter times are the time spent in a chapter's cells, read from the notebooks that
nbmake executed (``.nbmake/`` for the embedded profile, ``.rehearsal/nbmake/`` for the GPT-2
rehearsal), with the fp32 matmul rate of the same machine beside them (``bench`` measures it; a
time is only comparable with others at the same rate). ``render --check`` fails if BENCHMARKS.md
differs from what the records give (``tests/test_benchmarks_page.py`` runs it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "benchmarks"
PAGE = ROOT / "BENCHMARKS.md"
BENCH = {"quick": RECORDS / "bench-quick.json", "full": RECORDS / "bench-full.json"}
TIMES = RECORDS / "times.json"
# where nbmake leaves each profile's executed chapters (.ci/book.py, .ci/rehearsal.py)
NOTEBOOK_DIRS = {"embedded": ROOT / ".nbmake", "GPT-2 rehearsal": ROOT / ".rehearsal" / "nbmake"}


def machine() -> dict:
    """Date, commit and machine of a measurement made now."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"date": datetime.date.today().isoformat(),
            "commit": commit + ("+changes" if dirty else ""), "cpu": cpu, "cores": os.cpu_count()}


PEERS = ("sparsify", "dictionary_learning")
PEER_PREFIXES = tuple(f"{key}_{p}" for p in PEERS for key in (
    "train_tokens_per_s", "val_fve_typical", "val_dead_fraction", "speedup_vs", "peer_settings",
    "peer_not_run"))


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def cmd_bench(args) -> int:
    kind = "full" if args.full else "quick"
    out = RECORDS / f".bench-{kind}.raw.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "interp_lib", "bench", "--json", str(out)]
    if not args.full:
        cmd.append("--quick")
    if args.peers:
        cmd.append("--peers")
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc:
        return rc
    raw = json.loads(out.read_text())
    keep = ("matmul_gflops", "harvest_tokens_per_s", "harvest_tokens_per_s_plain_transformers",
            "harvest_tokens_per_s_transformer_lens", "harvest_vs_plain_transformers",
            "harvest_vs_transformer_lens", "harvest_roofline_fraction",
            "train_tokens_per_s_homebrew", "train_tokens_per_s_saelens", "speedup",
            "val_fve_typical_homebrew", "val_fve_typical_saelens", "val_dead_fraction_homebrew",
            "val_dead_fraction_saelens", "train_ceiling_fraction", "train_tokens_homebrew",
            "threads", "torch", "total_seconds")
    command = ("python -m interp_lib bench" + ("" if args.full else " --quick")
               + (" --peers" if args.peers else ""))
    peer_keys = [k for k in raw if k.startswith(PEER_PREFIXES)]
    record = {**machine(), "command": command,
              **{k: raw[k] for k in (*keep, *peer_keys) if k in raw},
              "train_config": raw.get("train_config", {})}
    _write(BENCH[kind], record)
    out.unlink()
    print(f"benchmarks: wrote {BENCH[kind].relative_to(ROOT)}")
    return 0


def _cell_seconds(nb_path: Path) -> float:
    sys.path.insert(0, str(ROOT / ".ci"))
    import nbformat
    from book import _seconds  # .ci/book.py: one reading of a cell's execution time

    nb = nbformat.read(str(nb_path), as_version=4)
    return round(sum(_seconds(c) for c in nb.cells if c.cell_type == "code"), 1)


def cmd_times(args) -> int:
    sys.path.insert(0, str(ROOT / ".ci"))
    import buildlib

    profiles = {}
    for profile, folder in NOTEBOOK_DIRS.items():
        row = {}
        for src in buildlib.chapters():
            nb = folder / src.relative_to(ROOT).with_suffix(".ipynb")
            if nb.is_file():
                row[src.stem] = _cell_seconds(nb)
        if row:
            profiles[profile] = row
    if not profiles:
        print("benchmarks: no executed notebooks (run `make test` and `make rehearse` first)",
              file=sys.stderr)
        return 2
    rate = None
    for kind in ("quick", "full"):
        if BENCH[kind].is_file():
            rec = json.loads(BENCH[kind].read_text())
            if rec.get("cpu") == machine()["cpu"]:
                rate = rec["matmul_gflops"]
                break
    record = {**machine(), "matmul_gflops": rate, "chapters": profiles,
              "make_test_s": args.make_test, "make_rehearse_s": args.make_rehearse,
              "note": args.note}
    _write(TIMES, record)
    print(f"benchmarks: wrote {TIMES.relative_to(ROOT)}")
    return 0


def _minutes(s: float | None) -> str:
    return "not recorded" if s is None else f"{int(s // 60)} min {int(round(s % 60))} s"


def _source(rec: dict) -> str:
    return f"{rec['date']}, commit {rec['commit']}, {rec['cpu']} ({rec['cores']} cores)"


def render() -> str:
    """BENCHMARKS.md from the records."""
    lines = ["# Benchmarks", "",
             "The latest measurement of each benchmark, written by `python .ci/benchmarks.py render` "
             "from the records in `benchmarks/` (see `.ci/benchmarks.py`); do not edit by hand. "
             "Speeds on machines of this kind differ by about 2x (an fp32 matmul rate from about "
             "190 to 450 GFLOP/s): compare only numbers measured with the same rate.", ""]
    for kind in ("quick", "full"):
        if not BENCH[kind].is_file():
            continue
        r = json.loads(BENCH[kind].read_text())
        tc = r.get("train_config", {})
        lines += [
            f"## `{r['command']}`", "",
            f"Measured {_source(r)}; fp32 matmul {r['matmul_gflops']:.0f} GFLOP/s, torch "
            f"{r['torch']}, {r['threads']} threads.", "",
            f"Training: TopK {tc.get('d_in')} -> {tc.get('d_sae')} latents, k = {tc.get('k')}, "
            f"batch {tc.get('batch_size')}, fp32, {r['train_tokens_homebrew']:,} tokens, every "
            "trainer on the same cached activations with the same schedule; held-out FVE on "
            "typical tokens (massive ones left out).", "",
            "| trainer | tokens/s | held-out FVE (typical tokens) | dead latents |",
            "|---|---|---|---|",
            f"| homebrew (`interp_lib.training.trainer`) | {r['train_tokens_per_s_homebrew']:,.0f} | "
            f"{r['val_fve_typical_homebrew']:.3f} | {r['val_dead_fraction_homebrew']:.1%} |",
            f"| SAELens `SAETrainer` | {r['train_tokens_per_s_saelens']:,.0f} | "
            f"{r['val_fve_typical_saelens']:.3f} | {r['val_dead_fraction_saelens']:.1%} |",
            *[f"| {p} | {r[f'train_tokens_per_s_{p}']:,.0f} | {r[f'val_fve_typical_{p}']:.3f} | "
              f"{r[f'val_dead_fraction_{p}']:.1%} |" for p in PEERS
              if f"train_tokens_per_s_{p}" in r],
            *[f"| {p} | not run: {r[f'peer_not_run_{p}']} | | |" for p in PEERS
              if f"peer_not_run_{p}" in r], "",
            f"Homebrew / SAELens: **{r['speedup']:.2f}x**"
            + "".join(f"; / {p}: **{r[f'speedup_vs_{p}']:.2f}x**" for p in PEERS
                      if f"speedup_vs_{p}" in r)
            + f". The homebrew trainer runs at {r['train_ceiling_fraction']:.0%} of its FLOP "
            "ceiling at this matmul rate.", "",
            *[f"- {p}: {r[f'peer_settings_{p}']}" for p in PEERS if f"peer_settings_{p}" in r],
            *([""] if any(f"peer_settings_{p}" in r for p in PEERS) else []),
            "| harvest (SmolLM2-135M to layer 12) | tokens/s |", "|---|---|",
            f"| lean forward (`interp_lib.model.fast_forward`) | {r['harvest_tokens_per_s']:,.0f} |",
            f"| plain `transformers` | {r['harvest_tokens_per_s_plain_transformers']:,.0f} |",
            "| TransformerLens `run_with_cache` | "
            f"{r['harvest_tokens_per_s_transformer_lens']:,.0f} |",
            "",
            f"Lean forward / plain transformers: **{r['harvest_vs_plain_transformers']:.2f}x**, "
            f"/ TransformerLens: {r['harvest_vs_transformer_lens']:.2f}x; it runs at "
            f"{r['harvest_roofline_fraction']:.0%} of the matmul rate.", ""]
    if TIMES.is_file():
        t = json.loads(TIMES.read_text())
        rate = (f"fp32 matmul {t['matmul_gflops']:.0f} GFLOP/s" if t.get("matmul_gflops")
                else "matmul rate not measured on this machine")
        lines += ["## Chapter times", "",
                  f"Time in each chapter's cells when `make test` (embedded profile) and "
                  f"`make rehearse` (GPT-2 small, rehearsed offline) executed it once. Measured "
                  f"{_source(t)}; {rate}.", ""]
        names = sorted({c for row in t["chapters"].values() for c in row})
        head = "| chapter | " + " | ".join(t["chapters"]) + " |"
        lines += [head, "|---" * (len(t["chapters"]) + 1) + "|"]
        for c in names:
            lines.append(f"| {c} | " + " | ".join(
                f"{row[c]:.0f} s" if c in row else "-" for row in t["chapters"].values()) + " |")
        lines += ["", f"`make test` {_minutes(t.get('make_test_s'))}; `make rehearse` "
                  f"{_minutes(t.get('make_rehearse_s'))} (after `make env`)."
                  + (f" {t['note']}" if t.get("note") else ""), ""]
    return "\n".join(lines).rstrip() + "\n"


def cmd_render(args) -> int:
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print("benchmarks: BENCHMARKS.md differs from its records; run "
                  "`python .ci/benchmarks.py render`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"benchmarks: wrote {PAGE.relative_to(ROOT)}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python .ci/benchmarks.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="run `python -m interp_lib bench` and record it")
    b.add_argument("--full", action="store_true", help="the full run (default: --quick)")
    b.add_argument("--peers", action="store_true",
                   help="with sparsify and dictionary_learning (make bench-peers installs them)")
    t = sub.add_parser("times", help="record the chapter times of the last make test / rehearse")
    t.add_argument("--make-test", type=float, default=None, metavar="S",
                   help="wall seconds of that `make test`")
    t.add_argument("--make-rehearse", type=float, default=None, metavar="S",
                   help="wall seconds of that `make rehearse`")
    t.add_argument("--note", default=None, help="what else ran on the machine meanwhile, if anything")
    r = sub.add_parser("render", help="write BENCHMARKS.md from the records")
    r.add_argument("--check", action="store_true", help="fail if BENCHMARKS.md is out of date")
    args = p.parse_args(argv)
    for name in ("make_test", "make_rehearse"):
        v = getattr(args, name, None)
        if v is not None and not v > 0:
            p.error(f"argument --{name.replace('_', '-')}: invalid value {v!r} (positive seconds)")
    return {"bench": cmd_bench, "times": cmd_times, "render": cmd_render}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
