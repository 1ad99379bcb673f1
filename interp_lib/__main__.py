"""Command line: ``python -m interp_lib {train,eval,bench,train-zoo,zoo,corpus}``.

* ``train``: train an SAE on cached activations and save it in SAELens format (see ``train
  --help``).
* ``eval DIR``: the foundation metrics of the SAE in DIR on held-out text.
* ``bench [--quick] [--json PATH]``: training and harvesting speed, measured in one run.
* ``train-zoo``: retrain the project's shipped SAEs from their recipe (same seeds, same corpus).
* ``zoo [--reevaluate]``: list the shipped SAEs with their held-out quality (recomputed with
  --reevaluate).
* ``corpus [--sources default|all|NAME,...]``: the offline corpus's composition by source, kind
  and text kind.

A reader's mistake (an argument out of range, an unknown name, a missing or damaged file) exits
with status 2 and one line naming it, as argparse does; Ctrl-C and SIGTERM stop a command without
leaving a half-written output. Any other error is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from interp_lib import data
from interp_lib.bench import main as main_bench
from interp_lib.errors import cli_errors
from interp_lib.evals.zoo_report import zoo_bar_table, zoo_kinds_table, zoo_table
from interp_lib.files import write_text_atomic
from interp_lib.model.loading import load_model
from interp_lib.sae.zoo import RELEASES, ZOO_RECIPE, load_sae
from interp_lib.training.cli import check_device_argument, main_train
from interp_lib.training.zoo import heldout_record, reevaluate_zoo, train_zoo

EVAL_CTX = 128
"""Context length of the held-out text ``eval`` scores (as :func:`heldout_record`)."""


def main_eval(argv: list[str] | None = None) -> int:
    """``python -m interp_lib eval DIR [--tokens N] [--json PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m interp_lib eval",
        description="Evaluate an SAE folder (SAELens format) on held-out text.",
    )
    parser.add_argument("path", help="SAE folder (cfg.json + sae_weights.safetensors)")
    parser.add_argument("--tokens", type=int, default=16_384, help="held-out tokens to score")
    parser.add_argument(
        "--model", default=None, help="model name (default: the one in the SAE's metadata)"
    )
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    if args.json is not None and Path(args.json).is_dir():
        parser.error(f"argument --json: invalid value {args.json!r} (a file path, not a folder)")
    if args.tokens < EVAL_CTX:
        parser.error(
            f"argument --tokens: invalid value {args.tokens!r} (at least {EVAL_CTX}, one context)"
        )
    with cli_errors(parser):
        return _eval(parser, args)


def _eval(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The body of :func:`main_eval`, after its arguments are checked."""
    sae = load_sae(args.path)
    model_name = args.model or sae.cfg.metadata.model_name
    if not model_name:
        parser.error("the SAE's metadata names no model: pass --model")
    model = load_model(model_name)
    metrics = heldout_record(sae, model, n_tokens=args.tokens, ctx_len=EVAL_CTX)
    labels = {
        "l0": "L0",
        "fve": "variance explained",
        "mse": "MSE",
        "ce_clean": "CE loss, clean",
        "ce_sae": "CE loss, SAE spliced",
        "ce_zero": "CE loss, zero-ablated",
        "ce_recovered": "CE-loss recovered",
        "ce_increase": "loss increase (nats)",
        "kl_div": "KL to clean (nats)",
        "dead_fraction": "dead features",
        "dense_fraction": "dense features (>10%)",
        "n_tokens": "tokens scored",
    }
    print(f"{args.path}  ({model_name}, {sae.cfg.metadata.hook_name}, d_sae={sae.cfg.d_sae})")
    for key, label in labels.items():
        value = metrics[key]
        text = (
            f"{value:.1%}"
            if key.endswith("fraction")
            else (f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
        )
        print(f"  {label:<24} {text}")
    if args.json:
        write_text_atomic(args.json, json.dumps(metrics, indent=1))
    return 0


def main_train_zoo(argv: list[str] | None = None) -> int:
    """``python -m interp_lib train-zoo [--release R ...] [--device cuda] [--tokens N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m interp_lib train-zoo",
        description=f"Retrain the shipped SAEs from one recipe: {ZOO_RECIPE}",
    )
    parser.add_argument(
        "--release",
        action="append",
        choices=sorted(RELEASES),
        help="only this release (repeatable)",
    )
    parser.add_argument(
        "--sae-id",
        action="append",
        help="only this SAE, e.g. blocks.20.hook_resid_pre (repeatable)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is available")
    parser.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="train every selected SAE on N tokens (overrides the recipe's per-SAE budgets)",
    )
    parser.add_argument(
        "--out", default=None, help="write into this folder instead of interp_lib/saes"
    )
    _add_sources_argument(parser, "the corpus to train on", default=None)
    args = parser.parse_args(argv)
    sources = None if args.sources is None else _sources(parser, args.sources)
    valid = [s for r in (args.release or RELEASES) for s in RELEASES[r].sae_ids]
    for sae_id in args.sae_id or []:
        if sae_id not in valid:
            parser.error(
                f"argument --sae-id: invalid choice: {sae_id!r} (choose from {', '.join(valid)})"
            )
    if args.tokens is not None and args.tokens < ZOO_RECIPE["ctx_len"]:
        parser.error(
            f"argument --tokens: invalid value {args.tokens!r} (at least the recipe's context "
            f"length, {ZOO_RECIPE['ctx_len']})"
        )
    check_device_argument(parser, args.device)
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"argument --out: invalid value {args.out!r} (a folder, not a file)")
    recipe = None if sources is None else {"sources": list(sources)}
    if args.tokens:  # one budget for every SAE: drop the per-SAE token budgets
        recipe = {
            **(recipe or {}),
            "train_tokens": args.tokens,
            "by_sae": {
                sae_id: {k: v for k, v in over.items() if k != "train_tokens"}
                for sae_id, over in ZOO_RECIPE["by_sae"].items()
            },
        }
    with cli_errors(parser):
        train_zoo(
            args.release, sae_ids=args.sae_id, recipe=recipe, device=args.device, out_root=args.out
        )
        print(zoo_table())
    return 0


def main_zoo(argv: list[str] | None = None) -> int:
    """``python -m interp_lib zoo [--reevaluate]``: the shipped SAEs and their held-out quality."""
    parser = argparse.ArgumentParser(prog="python -m interp_lib zoo", description=main_zoo.__doc__)
    parser.add_argument(
        "--reevaluate",
        action="store_true",
        help="recompute every shipped SAE's held-out metrics and rewrite its metrics.json",
    )
    args = parser.parse_args(argv)
    with cli_errors(parser):
        if args.reevaluate:
            reevaluate_zoo()
        print(zoo_table())
        kinds = zoo_kinds_table()
        if kinds:
            print("\nCE-loss recovered on the evaluation set's seven kinds of text:")
            print(kinds)
            print("\nAgainst the bar, the worst of the held-out split and the seven kinds:")
            print(zoo_bar_table())
    return 0


def _add_sources_argument(
    parser: argparse.ArgumentParser, what: str, default: str | None = "default"
) -> None:
    parser.add_argument(
        "--sources",
        default=default,
        help=f"{what}: 'default' (the corpus the chapters read), 'all', or comma-separated names "
        "from "
        + ", ".join(data.ALL_SOURCES)
        + ("" if default else f" (default: the recipe's, {','.join(ZOO_RECIPE['sources'])})"),
    )


def _sources(parser: argparse.ArgumentParser, value: str) -> tuple[str, ...]:
    """The corpus sources a ``--sources`` value names (argparse's error for unknown ones)."""
    named = {"default": data.SOURCES, "all": data.ALL_SOURCES}
    sources = named.get(value) or tuple(value.split(","))
    bad = [s for s in sources if s not in data.ALL_SOURCES]
    if bad:
        parser.error(
            f"argument --sources: invalid choice(s) {bad} (choose 'default', 'all' or from "
            f"{', '.join(data.ALL_SOURCES)})"
        )
    return sources


def main_corpus(argv: list[str] | None = None) -> int:
    """``python -m interp_lib corpus [--sources ...]``: the offline corpus's composition."""
    parser = argparse.ArgumentParser(
        prog="python -m interp_lib corpus", description=main_corpus.__doc__
    )
    _add_sources_argument(parser, "the corpus to describe")
    args = parser.parse_args(argv)
    docs = data.build_corpus(sources=_sources(parser, args.sources))
    report = data.corpus_report(docs)
    report["share"] = report["share"].map("{:.1%}".format)
    print(report.to_string(index=False))
    return 0


COMMANDS = {
    "train": main_train,
    "eval": main_eval,
    "bench": main_bench,
    "train-zoo": main_train_zoo,
    "zoo": main_zoo,
    "corpus": main_corpus,
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if command in COMMANDS:
        try:
            return COMMANDS[command](rest)
        except KeyboardInterrupt:  # outside a command's own handling (e.g. while parsing)
            print(f"python -m interp_lib {command}: interrupted", file=sys.stderr)
            return 130
    print(f"unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
