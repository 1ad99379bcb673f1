"""interp_lib: the small library behind the hands-on book on sparse-autoencoder interpretability.

One folder (wing) per idea, named after what a reader looks for:

* ``model/``: the language model: loading it, the lean forward, hook names, activations and their
  cache, tokens, the one encoder from text to SAE features, the book's two profiles.
* ``sae/``: sparse autoencoders: the homebrew SAEs and their variants, the sparse kernels,
  SAELens's on-disk format and its checks, the zoo of SAEs to load.
* ``training/``: training SAEs: the homebrew trainer, SAELens's trainer on the same data, the
  matched-L0 sweep, retraining the zoo, the training command line.
* ``evals/``: judging SAEs and conclusions: the evaluator, evidence (intervals, nulls, findings),
  held-out text, SAEBench's metrics, feature absorption.
* ``features/``: reading features: rankings and specialists, similarity across SAEs,
  per-feature statistics, feature splitting, automated interpretability.
* ``interventions/``: changing the model through features: steering, ablation and attribution,
  the logit lens, the checks they share.
* ``site/``: the static site: figures, feature pages and dashboards, the live pages and the
  model exported for the reader's browser.
* ``data/``: the probe texts, the offline corpus and the evaluation set; ``saes/``: the shipped
  SAEs' files (SAELens's format).
* ``errors``, ``files``: the library's exceptions, atomic writes and checked reads; ``bench``:
  speed of harvesting and training, measured in one run; ``__main__``: the command line.

The heavy libraries (transformers, transformer_lens' loaders, sae_lens) are imported where they
are first used, so that ``import interp_lib`` stays quick.
"""

from interp_lib.data import probe_texts
from interp_lib.errors import (
    DamagedFileError,
    InterpLibError,
    InvalidArgumentError,
    MissingFileError,
)
from interp_lib.evals.metrics import evaluate
from interp_lib.model import profiles
from interp_lib.model.encoding import encode_texts
from interp_lib.model.loading import DEFAULT_MODEL, HubUnavailableError, cache_dir, load_model
from interp_lib.sae.zoo import RELEASES, feature_url, list_saes, load_sae, sae_path

__all__ = [
    "DEFAULT_MODEL",
    "DamagedFileError",
    "HubUnavailableError",
    "InterpLibError",
    "InvalidArgumentError",
    "MissingFileError",
    "RELEASES",
    "cache_dir",
    "encode_texts",
    "evaluate",
    "probe_texts",
    "profiles",
    "feature_url",
    "list_saes",
    "load_model",
    "load_sae",
    "sae_path",
]
