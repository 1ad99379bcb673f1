"""Hook names: which layer a hook sits in, how wide its activation is, which hook an SAE reads.

TransformerLens names every activation it exposes (``blocks.15.hook_resid_pre``,
``blocks.15.hook_mlp_out``, ...); an SAE records the hook it was trained on in
``sae.cfg.metadata.hook_name``. Every module that runs a model up to an SAE's hook checks the pair
here first, so a mismatch fails with a message that names both sides instead of a shape error deep
inside a forward pass.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

_HOOK_LAYER = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook: str) -> int:
    """Layer index of a ``blocks.N.*`` hook name."""
    match = _HOOK_LAYER.match(hook)
    if not match:
        raise ValueError(f"Hook {hook!r} is not a per-layer hook (expected 'blocks.N.hook_...')")
    return int(match.group(1))


def stop_layer(hooks: Iterable[str]) -> int:
    """Smallest ``stop_at_layer`` that still fires every hook in ``hooks``."""
    return max(hook_layer(h) + 1 for h in hooks)


def resid_pre_layer(hook: str) -> int | None:
    """N for ``blocks.N.hook_resid_pre`` with N > 0 (a forward pass can restart there), else
    None."""
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", hook)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def check_hooks(model, hooks: Sequence[str] | str) -> list[str]:
    """``hooks`` as a list without repeats, after checking that the model has every one."""
    if isinstance(hooks, str):
        hooks = [hooks]
    hooks = list(dict.fromkeys(hooks))
    if not hooks:
        raise ValueError("need at least one hook name")
    valid = set(model.hook_dict)
    for hook in hooks:
        if hook not in valid:
            examples = ", ".join(sorted(h for h in valid if h.startswith("blocks.0."))[:8])
            raise ValueError(
                f"Unknown hook {hook!r} for this model. Hooks look like: {examples}, ..."
            )
    return hooks


def hook_width(model, hook: str) -> int:
    """Width of the activation at ``hook`` (d_model for resid/mlp_out/attn_out, d_mlp for mlp
    post)."""
    if re.search(r"mlp\.hook_(pre|post)$", hook):
        return model.cfg.d_mlp
    if re.search(r"attn\.hook_z$", hook):
        return model.cfg.n_heads * model.cfg.d_head
    return model.cfg.d_model


def sae_hook(sae) -> str:
    """Hook name an SAE was trained on (from its SAELens metadata)."""
    name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if not name:
        raise ValueError(
            "This SAE's cfg.metadata.hook_name is empty: cannot tell where it reads the model"
        )
    return name


def check_widths(model, sae) -> str:
    """The SAE's hook, after checking that the model has it and that the widths match
    (ValueError)."""
    hook = sae_hook(sae)
    if hook not in model.hook_dict:
        raise ValueError(f"The SAE reads hook {hook!r}, which this model does not have")
    width = hook_width(model, hook)
    if sae.cfg.d_in != width:
        raise ValueError(
            f"SAE input width d_in={sae.cfg.d_in} does not match the model's width {width} "
            f"at {hook}"
        )
    return hook
