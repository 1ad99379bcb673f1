"""Hook names: which layer a hook sits in, how wide its activation is, which hook an SAE reads.

TransformerLens names every activation it exposes (``blocks.15.hook_resid_pre``,
``blocks.15.hook_mlp_out``, ...); an SAE records the hook it was trained on in
``sae.cfg.metadata.hook_name``. Every module that runs a model up to an SAE's hook checks the pair
here first, so a mismatch fails with a message that names both sides instead of a shape error deep
inside a forward pass. The width is checked against every hook of the model even when the SAE names
no hook (an SAE built by hand, or from another library's files): an SAE that fits nowhere is
refused for its width, one that fits is told which hooks it could read.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from interp_lib.errors import InvalidArgumentError

_HOOK_LAYER = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook: str) -> int:
    """Layer index of a ``blocks.N.*`` hook name."""
    match = _HOOK_LAYER.match(hook)
    if not match:
        raise InvalidArgumentError(
            f"Hook {hook!r} is not a per-layer hook (expected 'blocks.N.hook_...')"
        )
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
        raise InvalidArgumentError("need at least one hook name")
    valid = set(model.hook_dict)
    for hook in hooks:
        if hook not in valid:
            examples = ", ".join(sorted(h for h in valid if h.startswith("blocks.0."))[:8])
            raise InvalidArgumentError(
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
        raise InvalidArgumentError(
            "This SAE's cfg.metadata.hook_name is empty: cannot tell where it reads the model"
        )
    return name


_SAE_SITES = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_mlp_out|hook_attn_out"
    r"|mlp\.hook_pre|mlp\.hook_post|attn\.hook_z)$"
)


def hooks_of_width(model, width: int) -> list[str]:
    """The model's per-layer hooks an SAE could read whose activation is ``width`` wide."""
    return [h for h in model.hook_dict if _SAE_SITES.match(h) and hook_width(model, h) == width]


def _describe(model, hooks: list[str]) -> str:
    """A short description of many hooks: each site with the range of its layers."""
    layers: dict[str, list[int]] = {}
    for hook in hooks:
        match = _SAE_SITES.match(hook)
        layers.setdefault(match.group(2), []).append(int(match.group(1)))
    parts = [
        f"blocks.N.{site} (N = {min(ls)}..{max(ls)})" if len(ls) > 1 else f"blocks.{ls[0]}.{site}"
        for site, ls in layers.items()
    ]
    return ", ".join(parts)


def _widths(model) -> str:
    """The widths of the model's hooks, e.g. ``576 (resid, attn_out, mlp_out), 1536 (mlp)``."""
    cfg = model.cfg
    out = {cfg.d_model: ["residual stream, attn_out, mlp_out"]}
    if getattr(cfg, "d_mlp", None):
        out.setdefault(cfg.d_mlp, []).append("mlp.hook_pre/post")
    out.setdefault(cfg.n_heads * cfg.d_head, []).append("attn.hook_z")
    return ", ".join(f"{w} ({'; '.join(names)})" for w, names in out.items())


def check_widths(model, sae) -> str:
    """The SAE's hook, after checking that the model has it and that the widths match
    (:class:`~interp_lib.errors.InvalidArgumentError`, a ValueError, naming both widths)."""
    d_in = sae.cfg.d_in
    fitting = hooks_of_width(model, d_in)
    if not fitting:
        raise InvalidArgumentError(
            f"SAE input width d_in={d_in} fits no hook of this model (d_model="
            f"{model.cfg.d_model}; hook widths: {_widths(model)}): this SAE was made for "
            "another model"
        )
    name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if not name:
        raise InvalidArgumentError(
            f"This SAE's cfg.metadata.hook_name is empty: cannot tell where it reads the model. "
            f"Its width d_in={d_in} fits {_describe(model, fitting)}: name its hook with "
            "interp_lib.sae.saelens_format.with_hook(sae, hook)"
        )
    if name not in model.hook_dict:
        raise InvalidArgumentError(
            f"The SAE reads hook {name!r}, which this model does not have; its width "
            f"d_in={d_in} fits {_describe(model, fitting)}"
        )
    width = hook_width(model, name)
    if d_in != width:
        raise InvalidArgumentError(
            f"SAE input width d_in={d_in} does not match the model's width {width} at {name}; "
            f"hooks of width {d_in}: {_describe(model, fitting)}"
        )
    return name
