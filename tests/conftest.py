"""Shared fixtures: the real embedded model (loaded once), tiny local models and SAEs made on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny problems run fastest on one thread (and a busy shared CPU makes 2 threads stall).
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm():
    """The real embedded model, SmolLM2-135M-Instruct (converted once into the user cache)."""
    from interp_lib import load_model

    return load_model("smollm2-135m")


def make_tiny_tokenizer(folder: Path):
    """A small word-level fast tokenizer with BOS/EOS, saved into ``folder`` (no hub needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the a cat dog sat on mat def return x y import print hello world . , ( ) : = + 1 2 3".split()
    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 checkpoint on disk, as a reader's downloaded model folder would be."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tok = make_tiny_tokenizer(folder)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_ctx=64,  # real GPT-2 configs carry n_ctx
                     n_embd=32, n_layer=2, n_head=4,
                     bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    from interp_lib import load_model

    return load_model(str(tiny_gpt2_dir))


def make_sae(d_in: int, d_sae: int, hook: str, *, k: int | None = 4, seed: int = 0):
    """A random SAELens SAE (TopK if k else standard ReLU) reading ``hook``."""
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    if k:
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = "test"
    return sae
