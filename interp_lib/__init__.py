"""interp_lib: the small library behind the hands-on book on sparse-autoencoder interpretability.

One module per idea, named after what a reader looks for:
models (load a language model), data (probe texts, offline corpus), activations (harvest & cache),
zoo (load SAEs), sae (an SAE written from scratch), train (train one), metrics (judge one),
analysis (read features out), plots (figures).
"""

from . import profiles
from .analysis import encode_texts
from .data import probe_texts
from .metrics import sae_metrics
from .models import DEFAULT_MODEL, HubUnavailableError, cache_dir, load_model
from .zoo import RELEASES, feature_url, list_saes, load_sae, sae_path

__all__ = [
    "DEFAULT_MODEL",
    "HubUnavailableError",
    "RELEASES",
    "cache_dir",
    "encode_texts",
    "probe_texts",
    "profiles",
    "sae_metrics",
    "feature_url",
    "list_saes",
    "load_model",
    "load_sae",
    "sae_path",
]
