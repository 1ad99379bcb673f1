"""The training command line: ``python -m interp_lib train`` trains one SAE and saves it.

:func:`main_train` saves in SAELens's format: its arguments are checked before anything is
harvested (a bad one exits with status 2 and one line naming it), and Ctrl-C stops training after
the current step and saves what was trained so far, the whole folder or nothing (a second Ctrl-C
aborts without saving). ``--engine saelens`` trains with SAELens's own trainer on the same data.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from interp_lib.errors import InvalidArgumentError, cli_errors
from interp_lib.model import activations
from interp_lib.model.hooks import hook_layer
from interp_lib.sae.matryoshka import nested_widths
from interp_lib.sae.saelens_format import check_sae_output, save_saelens
from interp_lib.training.trainer import (
    ARCHS,
    ENGINES,
    K_ARCHS,
    TrainConfig,
    train_sae,
)

__all__ = ["main_train", "check_device_argument"]


def _parser() -> argparse.ArgumentParser:
    """The ``python -m interp_lib train`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m interp_lib train",
        description="Train an SAE on cached activations and save it in SAELens format.",
    )
    p.add_argument(
        "--model", default="smollm2-135m", help="model name (see interp_lib.model.loading)"
    )
    p.add_argument("--hook", required=True, help="hook point, e.g. blocks.12.hook_resid_pre")
    p.add_argument("--arch", choices=ARCHS, default="topk")
    p.add_argument(
        "--k",
        type=int,
        default=32,
        help="TopK: active latents per token (BatchTopK, Matryoshka: per token on average)",
    )
    p.add_argument("--l1", type=float, default=5.0, help="ReLU: L1 coefficient")
    p.add_argument("--l0", type=float, default=1.0, help="JumpReLU: L0 coefficient")
    p.add_argument(
        "--widths",
        default=None,
        help="Matryoshka: nested prefix widths, comma-separated and increasing, e.g. 72,288,1152 "
        "(--width is added as the last; default: --width/64, /16, /4)",
    )
    p.add_argument("--width", type=int, required=True, help="number of latents (d_sae)")
    p.add_argument(
        "--tokens", type=int, required=True, help="tokens of activations to harvest (train split)"
    )
    p.add_argument(
        "--val-tokens",
        type=int,
        default=None,
        help="held-out tokens to evaluate on "
        "(default: a tenth of --tokens, at least 8192; 0: none)",
    )
    p.add_argument("--ctx-len", type=int, default=128)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage dtype of the weights",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder (cfg.json, sae_weights.safetensors, training_log.json)",
    )
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is available")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="interp_lib",
        help="whose trainer: this library's, or SAELens's own SAETrainer on the same cached "
        "activations and settings (interp_lib.training.saelens_trainer)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with status 2 and one line naming the argument, its value and the valid ones, before
    anything is harvested."""

    def bad(name: str, value: Any, valid: str) -> None:
        p.error(f"argument {name}: invalid value {value!r} ({valid})")

    if args.width < 1:
        bad("--width", args.width, "a positive number of latents")
    if args.arch in K_ARCHS and not 1 <= args.k <= args.width:
        bad("--k", args.k, f"from 1 to --width {args.width} for a {args.arch} SAE")
    if not (math.isfinite(args.l0) and args.l0 >= 0):
        bad("--l0", args.l0, "a non-negative L0 coefficient")
    if args.widths is not None:
        try:
            args.widths = nested_widths([int(w) for w in args.widths.split(",")], args.width)
        except (ValueError, InvalidArgumentError):
            bad("--widths", args.widths, f"increasing positive integers up to --width {args.width}")
    if args.ctx_len < 2:
        bad("--ctx-len", args.ctx_len, "at least 2 tokens")
    if args.tokens < args.ctx_len:
        bad("--tokens", args.tokens, f"at least --ctx-len {args.ctx_len}")
    if args.val_tokens is not None and (args.val_tokens < 0 or 0 < args.val_tokens < args.ctx_len):
        bad("--val-tokens", args.val_tokens, f"0 (none) or at least --ctx-len {args.ctx_len}")
    if args.batch_size < 1:
        bad("--batch-size", args.batch_size, "a positive number of tokens")
    if not (math.isfinite(args.epochs) and args.epochs > 0):
        bad("--epochs", args.epochs, "a positive number of passes")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        bad("--lr", args.lr, "a positive learning rate")
    if not (math.isfinite(args.l1) and args.l1 >= 0):
        bad("--l1", args.l1, "a non-negative L1 coefficient")
    check_device_argument(p, args.device)
    try:
        hook_layer(args.hook)
    except InvalidArgumentError as exc:
        p.error(f"argument --hook: {exc}")
    try:
        check_sae_output(args.out)
    except InvalidArgumentError as exc:
        p.error(f"argument --out: {exc}")


def check_device_argument(p: argparse.ArgumentParser, device: str, name: str = "--device") -> None:
    """Exit with status 2 unless ``device`` names a torch device this machine has."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        kind = None
    available = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if kind not in available or (kind == "cuda" and not _cuda_index_ok(device)):
        p.error(f"argument {name}: invalid value {device!r} (this machine has: {available})")


def _cuda_index_ok(device: str) -> bool:
    """Whether a ``cuda[:i]`` device exists."""
    index = torch.device(device).index
    return index is None or index < torch.cuda.device_count()


@contextmanager
def _ctrl_c_stops(requested: list[bool]) -> Iterator[None]:
    """While inside, a first Ctrl-C asks training to stop after the current step (appending to
    ``requested``); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum: int, frame: object) -> None:
        requested.append(True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            "\nCtrl-C: stopping after this step and saving the SAE trained so far "
            "(Ctrl-C again to quit without saving)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _nothing_half_written(parser: argparse.ArgumentParser, out: str) -> Iterator[None]:
    """Around saving: Ctrl-C exits 130 saying that nothing was half-written (saves are atomic)."""
    try:
        yield
    except KeyboardInterrupt:
        parser.exit(
            130, f"{parser.prog}: interrupted while saving: nothing half-written in {out}\n"
        )


def _summary(cfg: TrainConfig, d_in: int, path: Path, m: dict) -> str:
    """The one line printed once an SAE is saved."""
    summary = (
        f"saved {cfg.arch} SAE ({d_in} -> {cfg.d_sae}) to {path}: "
        f"{m['train_tokens']:,} tokens in {m['train_seconds']:.0f} s "
        f"({m['tokens_per_s']:,.0f} tok/s)"
    )
    if "val_fve" in m:
        summary += (
            f", held-out FVE {m['val_fve']:.3f}, L0 {m['val_l0']:.1f}, "
            f"dead {m['val_dead_fraction']:.1%}"
        )
    return summary


def _train_and_save_with_saelens(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    acts: Tensor,
    val: Tensor | None,
    cfg: TrainConfig,
) -> int:
    """``--engine saelens``: SAELens's SAETrainer on the same activations, saved by SAELens's
    rules (Ctrl-C quits without saving: its trainer has no stop between steps)."""
    from interp_lib.sae.saelens_format import save_saelens_model
    from interp_lib.training.saelens_trainer import train_saelens

    result = train_saelens(acts, cfg, val_acts=val, progress=not args.no_progress)
    with _nothing_half_written(parser, args.out):
        path = save_saelens_model(
            result.sae,
            args.out,
            hook_name=args.hook,
            model_name=args.model,
            dtype=args.dtype,
            extra_metadata={"train_config": asdict(cfg), "context_size": args.ctx_len},
            history=result.history,
            metrics=result.metrics,
        )
    print(_summary(cfg, acts.shape[1], path, result.metrics) + " (SAELens's trainer)")
    return 0


def main_train(argv: list[str] | None = None) -> int:
    """``python -m interp_lib train --model M --hook H
    --arch {relu,topk,jumprelu,batchtopk,matryoshka} [--k K] [--l1 C] [--l0 C] [--widths W1,W2]
    --width W --tokens N --out DIR [--seed S] [--epochs E] [--lr LR]``."""
    parser = _parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    with cli_errors(parser):
        return _train_and_save(parser, args)


def _train_and_save(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The body of :func:`main_train`, after its arguments are checked."""
    progress = not args.no_progress
    acts = activations.cached_activations(
        args.model, [args.hook], n_tokens=args.tokens, ctx_len=args.ctx_len, progress=progress
    )[args.hook]
    val_tokens = args.val_tokens if args.val_tokens is not None else max(8192, args.tokens // 10)
    val = None
    if val_tokens:
        val = activations.cached_activations(
            args.model,
            [args.hook],
            n_tokens=val_tokens,
            split="heldout",
            ctx_len=args.ctx_len,
            progress=progress,
        )[args.hook]
    cfg = TrainConfig(
        arch=args.arch,
        d_sae=args.width,
        k=args.k,
        l1_coeff=args.l1,
        l0_coeff=args.l0,
        matryoshka_widths=args.widths,
        lr=args.lr,
        batch_size=min(args.batch_size, acts.shape[0]),
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
    )
    requested: list[bool] = []
    if args.engine == "saelens":
        return _train_and_save_with_saelens(parser, args, acts, val, cfg)
    with _ctrl_c_stops(requested):
        result = train_sae(acts, cfg, val_acts=val, progress=progress, stop=lambda: bool(requested))
    m = result.metrics
    with _nothing_half_written(parser, args.out):
        path = save_saelens(
            result.sae,
            args.out,
            hook_name=args.hook,
            model_name=args.model,
            scale=result.scale,
            dataset=(
                f"interp_lib offline corpus (train split, {acts.shape[0]} tokens, "
                f"ctx_len {args.ctx_len})"
            ),
            dtype=args.dtype,
            context_size=args.ctx_len,
            extra_metadata={"train_config": asdict(cfg)},
            history=result.history,
            metrics=m,
        )
    print(_summary(cfg, acts.shape[1], path, m))
    if "stopped_at_step" in m:
        print(
            f"interrupted: the SAE saved (complete) is the one trained for "
            f"{m['stopped_at_step']} of {m['planned_steps']} steps",
            file=sys.stderr,
        )
    elif requested:
        print("interrupted as training ended: the SAE saved is complete", file=sys.stderr)
    return 130 if requested else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_train())
