"""The book's two profiles: the embedded default (offline) and GPT-2 small (online).

Every chapter starts with one cell::

    profile = interp_lib.model.profiles.current()      # reads INTERP_PROFILE: "embedded" or "gpt2"
    model = interp_lib.load_model(profile.model)
    sae = interp_lib.load_sae(*profile.main_sae)

and uses ``profile`` wherever it needs a model or an SAE, so setting ``INTERP_PROFILE=gpt2``
reruns the same chapter on GPT-2 small with SAELens's ``gpt2-small-res-jb`` (needs the hub).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from interp_lib.errors import InvalidArgumentError

ENV_VAR = "INTERP_PROFILE"


class Profile(NamedTuple):
    """Which model and which SAEs a chapter uses."""

    name: str
    """``"embedded"`` or ``"gpt2"``."""
    model: str
    """Name for :func:`interp_lib.load_model`."""
    main_sae: tuple[str, str]
    """(release, sae_id) of the chapter's default SAE: a middle-layer residual-stream SAE."""
    residual_saes: tuple[tuple[str, str], ...]
    """Residual-stream SAEs at increasing depth (for comparisons across layers)."""
    mlp_saes: tuple[tuple[str, str], ...]
    """MLP-output SAEs (for comparisons across sites)."""
    offline: bool
    """True if everything loads with no network."""
    max_train_width: int = 4608
    """Widest SAE a chapter trains from scratch (chapters 4 and 6): a few CPU minutes."""

    def train_width(self, d_sae: int) -> int:
        """Width a chapter trains at when it imitates an SAE of ``d_sae`` latents: the smaller."""
        return min(int(d_sae), self.max_train_width)

    @property
    def all_saes(self) -> tuple[tuple[str, str], ...]:
        """Every SAE the profile compares, residual first."""
        return self.residual_saes + self.mlp_saes


PROFILES: dict[str, Profile] = {
    "embedded": Profile(
        "embedded",
        "smollm2-135m",
        ("smollm2-135m-res", "blocks.15.hook_resid_pre"),
        tuple(("smollm2-135m-res", f"blocks.{layer}.hook_resid_pre") for layer in (5, 15, 20, 25)),
        (("smollm2-135m-mlp", "blocks.15.hook_mlp_out"),),
        True,
    ),
    "gpt2": Profile(
        "gpt2",
        "gpt2-small",
        ("gpt2-small-res-jb", "blocks.6.hook_resid_pre"),
        tuple(("gpt2-small-res-jb", f"blocks.{layer}.hook_resid_pre") for layer in (6, 8, 10)),
        (("gpt2-small-mlp-out-v5-32k", "blocks.6.hook_mlp_out"),),
        False,
    ),
}


def current() -> Profile:
    """The profile named by ``$INTERP_PROFILE`` (default ``"embedded"``)."""
    name = os.environ.get(ENV_VAR, "embedded").strip() or "embedded"
    if name not in PROFILES:
        raise InvalidArgumentError(
            f"{ENV_VAR}={name!r} is not a profile. Valid profiles: {sorted(PROFILES)}"
        )
    return PROFILES[name]
