"""How fast is this machine at the two expensive things: harvesting activations and training.

``python -m interp_lib bench [--quick] [--json PATH]`` measures, in one run:

* the machine's fp32 matrix-multiply rate (GFLOP/s, one large square matmul, best of a few);
* harvesting: tokens per second through the first layers of SmolLM2-135M up to the SAE's hook,
  for the library's :func:`~interp_lib.model.activations.harvest` (the lean Llama forward of
  :mod:`interp_lib.model.fast_forward`), TransformerLens's ``run_with_cache`` (the library's old
  path) and a plain ``transformers`` ``LlamaForCausalLM`` cut to the same layers, on the same tokens
  and
  batch, interleaved and best of a few repeats (the machine may be shared: the *ratios* are what
  one run can measure fairly); and, for information, harvest as a fraction of the matmul rate
  (the model's FLOPs per token, counted from its config, times tokens/s, over the measured
  GFLOP/s);
* training, on *identical* activations (cached for that hook, position 0 left out): our
  trainer (:func:`interp_lib.training.trainer.train_sae`, sparse TopK kernels) against SAELens's own
  ``SAETrainer``, same size (576 -> 4608), same ``k`` (32), batch 4096, fp32, same schedule and
  data order; each then evaluated on held-out activations (FVE, L0, dead latents) so the
  speed-up is shown at equal quality; and our trainer's tokens/s as a fraction of its ceiling
  (the sparse step's FLOPs per token, :func:`topk_train_flops_per_token`, at the matmul rate);
* peak resident memory of the process (``resource.getrusage``).

``--peers`` adds the field's other TopK trainers, EleutherAI's ``sparsify`` and
``dictionary_learning``, each through its own training code on the same activations, sizes, ``k``,
batch, schedule and tokens, then the same held-out evaluation (:mod:`interp_lib.bench_peers`;
``make bench-peers`` installs them).

``--quick`` takes a few minutes on a 2-core CPU (less once the activations are cached).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from interp_lib import bench_peers, data
from interp_lib.errors import InvalidArgumentError, cli_errors
from interp_lib.files import write_text_atomic
from interp_lib.model.activations import cached_activations, corpus_split, harvest
from interp_lib.model.fast_forward import fast_forward_supported
from interp_lib.model.hooks import hook_layer
from interp_lib.model.loading import embedded_model_dir, load_model, quiet_loading
from interp_lib.training.saelens_trainer import train_saelens
from interp_lib.training.trainer import TrainConfig, train_sae

__all__ = [
    "matmul_gflops",
    "transformer_flops_per_token",
    "topk_train_flops_per_token",
    "layers_run",
    "peak_rss_mb",
    "plain_transformers_forward",
    "bench_harvest",
    "bench_training",
    "run_bench",
    "main",
]

HOOK = "blocks.12.hook_resid_pre"
MODEL = "smollm2-135m"
CTX_LEN = 128


# --------------------------------------------------------------------------------------------
# Small measuring helpers
# --------------------------------------------------------------------------------------------
def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Measured rate of one ``[n, n] @ [n, n]`` matmul (``2 n^3`` FLOPs), best of ``repeats``, in
    GFLOP/s."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up (thread pool, caches)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def transformer_flops_per_token(cfg: Any, n_layers: int, ctx_len: int) -> float:
    """Forward FLOPs per token through ``n_layers`` transformer blocks (no unembedding).

    ``cfg``: a TransformerLens config (or anything with ``d_model, n_heads, d_head, d_mlp`` and
    optionally ``n_key_value_heads``, ``gated_mlp``). Per block and token: ``2 x`` the weights
    touched (Q, K, V, O projections, with grouped K/V heads; the MLP with 3 matrices when gated,
    2 otherwise) plus attention scores and mixing, ``2 x 2 x n_heads x d_head x ctx_len`` (the
    full square, as TransformerLens computes it before masking). Norms and softmax are ignored.
    """
    d, h, dh, d_mlp = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    kv = getattr(cfg, "n_key_value_heads", None) or h
    attn_proj = d * (h * dh) * 2 + d * (kv * dh) * 2  # Q and O, K and V
    mlp = d * d_mlp * (3 if getattr(cfg, "gated_mlp", False) else 2)
    attn_mix = 2 * h * dh * ctx_len
    return float(n_layers * (2 * (attn_proj + mlp) + 2 * attn_mix))


def topk_train_flops_per_token(d_in: int, d_sae: int, k: int) -> float:
    """FLOPs per token of one sparse TopK training step (:mod:`interp_lib.sae.kernels`), from the
    shapes: the dense encoder product that chooses the top ``k`` (``2 d_in d_sae``), then four
    products over the ``k`` chosen latents only (``2 k d_in`` each: the decode, the gradients of
    the chosen activations, of their decoder rows and of their encoder rows). AuxK over dead
    latents, the top-k selection, norms and the optimiser are not counted: this is the step's
    floor, and the machine's matmul rate over it is the trainer's ceiling."""
    return float(2 * d_in * d_sae + 4 * 2 * k * d_in)


def layers_run(hook: str) -> int:
    """Blocks a forward pass runs to produce ``hook`` (``blocks.N.hook_resid_pre`` is the stream
    *before* block N, so N blocks; any other ``blocks.N.*`` hook needs N + 1)."""
    layer = hook_layer(hook)
    return layer if hook.endswith("hook_resid_pre") else layer + 1


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


# --------------------------------------------------------------------------------------------
# The two measurements
# --------------------------------------------------------------------------------------------
def plain_transformers_forward(folder: str | Path, n_layers: int):
    """A plain ``transformers`` forward through the first ``n_layers`` blocks of the Llama model
    in ``folder``: tokens [B, T] -> the residual stream after block ``n_layers - 1`` [B, T, d].

    The layer list is cut to ``n_layers`` and the stream read by a forward hook on the last kept
    block (``hidden_states[-1]`` of a cut model would be *after* the final norm).
    """
    from transformers import AutoModelForCausalLM

    if n_layers < 1:
        raise InvalidArgumentError(f"need at least one block, got n_layers={n_layers}")
    with quiet_loading():
        hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    hf.model.layers = hf.model.layers[:n_layers]
    seen: dict[str, torch.Tensor] = {}

    def keep(module, args, output):
        seen["resid"] = output[0] if isinstance(output, tuple) else output

    hf.model.layers[n_layers - 1].register_forward_hook(keep)

    @torch.inference_mode()
    def forward(tokens: torch.Tensor) -> torch.Tensor:
        hf.model(input_ids=tokens, use_cache=False)
        return seen.pop("resid")

    return forward


def bench_harvest(
    model,
    tokens: torch.Tensor,
    hook: str = HOOK,
    batch_size: int = 16,
    *,
    folder: str | Path | None = None,
    repeats: int = 3,
) -> dict:
    """Time :func:`interp_lib.model.activations.harvest`, TransformerLens's path and plain
    ``transformers`` on ``tokens [n_ctx, ctx_len]``: same blocks, tokens and batch size; the three
    interleaved, each the best of ``repeats`` passes."""

    n_layers = layers_run(hook)
    plain = plain_transformers_forward(folder or embedded_model_dir(MODEL), n_layers)

    def plain_pass(toks: torch.Tensor) -> None:
        for i in range(0, toks.shape[0], batch_size):
            plain(toks[i : i + batch_size])

    engines = {
        "harvest": lambda toks, bs: harvest(model, [hook], toks, batch_size=bs, progress=False),
        "transformer_lens": lambda toks, bs: harvest(
            model, [hook], toks, batch_size=bs, progress=False, engine="transformer_lens"
        ),
        "plain_transformers": lambda toks, bs: plain_pass(toks),
    }
    for run in engines.values():  # warm-up (first-call costs: weights fused, thread pools)
        run(tokens[:2], 2)
    best = {name: math.inf for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            t0 = time.perf_counter()
            run(tokens, batch_size)
            best[name] = min(best[name], time.perf_counter() - t0)
    n_ctx, ctx_len = tokens.shape
    n_tokens = n_ctx * ctx_len
    out = {
        "harvest_tokens": n_tokens,
        "harvest_rows": n_ctx * (ctx_len - 1),  # position 0 left out
        "harvest_batch_size": batch_size,
        "harvest_repeats": repeats,
        "harvest_engine": (
            "lean Llama forward" if fast_forward_supported(model, [hook]) else "transformer_lens"
        ),
        "harvest_seconds": best["harvest"],
        "harvest_layers": n_layers,
        "harvest_flops_per_token": transformer_flops_per_token(model.cfg, n_layers, ctx_len),
    }
    for name, seconds in best.items():
        key = "harvest_tokens_per_s" + ("" if name == "harvest" else f"_{name}")
        out[key] = n_tokens / seconds
    out["harvest_vs_plain_transformers"] = best["plain_transformers"] / best["harvest"]
    out["harvest_vs_transformer_lens"] = best["transformer_lens"] / best["harvest"]
    return out


def bench_training(
    acts: torch.Tensor,
    val: torch.Tensor,
    *,
    epochs: float,
    d_sae: int = 4608,
    k: int = 32,
    batch_size: int = 4096,
    seed: int = 0,
    progress: bool = False,
    peers: bool = False,
) -> dict:
    """Train the same TopK SAE with both trainers on ``acts``; evaluate both on ``val``.

    ``peers``: also train and evaluate the peers of :mod:`interp_lib.bench_peers` (their keys end
    in the peer's name; ``speedup_vs_<peer>``: homebrew tokens/s over the peer's)."""

    cfg = TrainConfig(
        arch="topk", d_sae=d_sae, k=k, batch_size=batch_size, epochs=epochs, seed=seed
    )
    out: dict[str, Any] = {
        "train_config": {
            "arch": cfg.arch,
            "d_in": acts.shape[1],
            "d_sae": d_sae,
            "k": k,
            "batch_size": batch_size,
            "epochs": epochs,
            "lr": cfg.learning_rate,
            "dtype": "float32",
            "train_rows": acts.shape[0],
            "val_rows": val.shape[0],
        }
    }
    for name, trainer in (("homebrew", train_sae), ("saelens", train_saelens)):
        result = trainer(acts, cfg, progress=progress)
        out.update(bench_peers.trainer_keys(name, result.sae, result.scale, result.metrics, val))
        del result
    out["speedup"] = out["train_tokens_per_s_homebrew"] / out["train_tokens_per_s_saelens"]
    if peers:
        out.update(bench_peers.bench_peers(acts, val, cfg, progress=progress))
        for name in out["peers"]:
            if f"train_tokens_per_s_{name}" in out:
                out[f"speedup_vs_{name}"] = (
                    out["train_tokens_per_s_homebrew"] / out[f"train_tokens_per_s_{name}"]
                )
    return out


def run_bench(
    quick: bool = True,
    json_path: str | None = None,
    *,
    progress: bool = False,
    print_table: bool = True,
    peers: bool = False,
) -> dict:
    """Measure everything above in one run; print a table; write ``json_path`` if given.
    ``peers``: add the peer trainers (fails at once, before any work, if they are not installed).

    Keys include ``train_tokens_per_s_homebrew``, ``train_tokens_per_s_saelens``, ``speedup``,
    ``val_fve_homebrew``, ``val_fve_saelens``, ``harvest_tokens_per_s`` (and ``_transformer_lens``,
    ``_plain_transformers``), ``harvest_vs_plain_transformers``, ``harvest_vs_transformer_lens``,
    ``harvest_roofline_fraction``, ``train_flops_per_token``, ``train_ceiling_tokens_per_s``,
    ``train_ceiling_fraction``, ``matmul_gflops``, ``peak_rss_mb``; with ``peers``, for each
    peer ``train_tokens_per_s_<peer>``, ``val_fve_typical_<peer>``, ``val_dead_fraction_<peer>``,
    ``speedup_vs_<peer>``, ``peer_settings_<peer>`` (or ``peer_not_run_<peer>``).
    """

    if peers:
        bench_peers.require_peers()
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "quick": quick,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "model": MODEL,
        "hook": HOOK,
    }
    res["matmul_gflops"] = matmul_gflops(2048 if quick else 4096, repeats=5 if quick else 3)

    model = load_model(MODEL)
    n_ctx = 32 if quick else 128
    tokens = data.tokenize_corpus(
        model.tokenizer, corpus_split("heldout"), ctx_len=CTX_LEN, max_tokens=n_ctx * CTX_LEN
    )
    res.update(bench_harvest(model, tokens, repeats=3 if quick else 2))
    res["harvest_gflops"] = res["harvest_tokens_per_s"] * res["harvest_flops_per_token"] / 1e9
    res["harvest_roofline_fraction"] = res["harvest_gflops"] / res["matmul_gflops"]

    n_train, n_val, epochs = (32_768, 8_192, 4) if quick else (262_144, 32_768, 3)
    acts = cached_activations(
        MODEL, [HOOK], n_tokens=n_train, ctx_len=CTX_LEN, model=model, progress=progress
    )[HOOK]
    val = cached_activations(
        MODEL,
        [HOOK],
        n_tokens=n_val,
        split="heldout",
        ctx_len=CTX_LEN,
        model=model,
        progress=progress,
    )[HOOK]
    del model
    res.update(bench_training(acts, val, epochs=epochs, progress=progress, peers=peers))
    tc = res["train_config"]
    res["train_flops_per_token"] = topk_train_flops_per_token(tc["d_in"], tc["d_sae"], tc["k"])
    res["train_ceiling_tokens_per_s"] = res["matmul_gflops"] * 1e9 / res["train_flops_per_token"]
    res["train_ceiling_fraction"] = (
        res["train_tokens_per_s_homebrew"] / res["train_ceiling_tokens_per_s"]
    )
    res["peak_rss_mb"] = peak_rss_mb()
    res["total_seconds"] = time.perf_counter() - t_start

    if print_table:
        print(format_table(res))
    if json_path:
        write_text_atomic(json_path, json.dumps(res, indent=2) + "\n")
    return res


def format_table(res: dict) -> str:
    """The human-readable summary of :func:`run_bench`'s result."""
    tc = res["train_config"]
    peers = tuple(res.get("peers", ()))
    width = max(12, *(len(name) for name in peers)) if peers else 12
    lines = [
        f"interp_lib bench ({'quick' if res['quick'] else 'full'}; torch {res['torch']}, "
        f"{res['threads']} threads)",
        f"  fp32 matmul                {res['matmul_gflops']:10.1f} GFLOP/s",
        f"  harvest {res['hook']} ({res['harvest_layers']} blocks, "
        f"{res['harvest_flops_per_token'] / 1e6:.0f} MFLOP/token"
        + (
            f"; batch {res['harvest_batch_size']}, best of {res['harvest_repeats']}, interleaved)"
            if "harvest_batch_size" in res
            else ")"
        ),
        f"    tokens/s                 {res['harvest_tokens_per_s']:10,.0f}"
        + (f"  ({res['harvest_engine']})" if "harvest_engine" in res else ""),
    ]
    for name, label in (
        ("plain_transformers", "plain transformers"),
        ("transformer_lens", "TransformerLens"),
    ):
        if f"harvest_tokens_per_s_{name}" in res:
            lines.append(
                f"    {label:24s} {res[f'harvest_tokens_per_s_{name}']:10,.0f}"
                f"  harvest / {label}: {res[f'harvest_vs_{name}']:.2f}x"
            )
    lines += [
        f"    achieved                 {res['harvest_gflops']:10.1f} GFLOP/s = "
        f"{res['harvest_roofline_fraction']:.0%} of the matmul rate",
        f"  train TopK {tc['d_in']} -> {tc['d_sae']}, k={tc['k']}, batch {tc['batch_size']}, "
        f"fp32, {res['train_tokens_homebrew']:,} tokens "
        f"({tc['train_rows']:,} rows x {tc['epochs']} epochs)",
        f"    {'':{width}s} {'tokens/s':>10s} {'seconds':>8s} {'val FVE':>8s} {'typical':>8s} "
        f"{'val L0':>7s} {'dead':>6s}",
    ]
    for name in ("homebrew", "saelens", *peers):
        if f"train_tokens_per_s_{name}" not in res:
            reason = res.get(f"peer_not_run_{name}", "no result")
            lines.append(f"    {name:{width}s} not run: {reason}")
            continue
        typical = res.get(f"val_fve_typical_{name}", float("nan"))
        lines.append(
            f"    {name:{width}s} {res[f'train_tokens_per_s_{name}']:10,.0f} "
            f"{res[f'train_seconds_{name}']:8.1f} {res[f'val_fve_{name}']:8.3f} {typical:8.3f} "
            f"{res[f'val_l0_{name}']:7.1f} {res[f'val_dead_fraction_{name}']:6.1%}"
        )
    lines.append(
        "    (FVE over all held-out tokens; 'typical': without the rare huge-norm tokens, "
        f"{res.get('val_outlier_fraction_homebrew', float('nan')):.2%} of them)"
    )
    if "train_ceiling_tokens_per_s" in res:
        ceiling = res["train_ceiling_tokens_per_s"]
        lines.append(
            f"    ceiling {ceiling:,.0f} tokens/s ({res['train_flops_per_token'] / 1e6:.2f} "
            f"MFLOP/token at the matmul rate; {ceiling / res['train_tokens_per_s_saelens']:.1f}x "
            f"SAELens): homebrew at {res['train_ceiling_fraction']:.0%} of it"
        )
    lines.append(f"    speed-up homebrew / SAELens: {res['speedup']:.2f}x")
    for name in peers:
        if f"speedup_vs_{name}" in res:
            lines.append(f"    speed-up homebrew / {name}: {res[f'speedup_vs_{name}']:.2f}x")
    for name in peers:
        if f"peer_settings_{name}" in res:
            lines.append(f"    {name}: {res[f'peer_settings_{name}']}")
    lines += [
        f"  peak memory {res['peak_rss_mb']:,.0f} MiB; total {res['total_seconds']:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m interp_lib bench [--quick] [--json PATH] [--peers]``."""
    p = argparse.ArgumentParser(
        prog="python -m interp_lib bench", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller run (a few minutes on 2 CPU cores)"
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument(
        "--peers",
        action="store_true",
        help="also train sparsify's and dictionary_learning's TopK trainers (make bench-peers)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = p.parse_args(argv)
    if args.json is not None and Path(args.json).is_dir():
        p.error(f"argument --json: invalid value {args.json!r} (a file path, not a folder)")
    if args.threads is not None and args.threads < 1:
        p.error(f"argument --threads: invalid value {args.threads!r} (a positive number)")
    if args.threads:
        torch.set_num_threads(args.threads)
    with cli_errors(p):
        run_bench(quick=args.quick, json_path=args.json, progress=args.progress, peers=args.peers)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
