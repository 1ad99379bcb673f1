"""interp_lib: the small library behind the hands-on book on sparse-autoencoder interpretability.

One module per idea, named after what a reader looks for:

* ``models``: load a language model (the embedded SmolLM2-135M offline, GPT-2 small online).
* ``profiles``: which model and SAEs a chapter uses (``INTERP_PROFILE``).
* ``data``: the probe texts (``data.probes``) and the offline corpus (``data.corpus``).
* ``hooks``: hook names, their layers and widths; which hook an SAE reads.
* ``activations``: harvest a model's activations in one pass, and cache them on disk.
* ``zoo``: the SAEs to load (the project's shipped releases, SAELens's registry), their records.
* ``train_zoo``: retrain the shipped SAEs from their recipe and record their quality.
* ``sae``: an SAE written from scratch (ReLU and TopK), with a dense reference forward;
  ``jumprelu``, ``batchtopk``, ``matryoshka``: today's variants, one module each.
* ``kernels``: the sparse (CSR) kernels behind the TopK SAE's fast path.
* ``saelens_format``: save and load the library's SAEs in SAELens's on-disk format.
* ``train``: the homebrew trainer; ``train_saelens``: SAELens's own trainer on the same data.
* ``variants``: architectures trained side by side at matched L0, and metrics read at an L0.
* ``metrics``: the one evaluator (L0, variance explained, CE-loss recovered, KL, dead features).
* ``saebench``: SAEBench's sparse probing, offline, on the labels the project ships;
  ``absorption``: SAEBench's first-letter feature-absorption definitions; ``first_letter``: that
  eval end to end on the model's own vocabulary (one model pass shared by many SAEs).
* ``encoding``: the one encoder, from texts to per-token feature activations.
* ``tokens``: token ids as display strings, one convention for split characters.
* ``analysis``: which features matter over a set of texts (rankings, categories, specialists).
* ``similarity``: match features across SAEs (decoder cosine, activation correlation).
* ``steering``, ``attribution``, ``logit_lens``, ``interventions``: change the model through
  features and measure what changes (``interventions`` holds what the three share).
* ``feature_stats``: per-feature statistics over a corpus, cached; ``feature_pages``: their HTML;
  ``feature_dashboards``: every feature's dashboard from sharded data, and the feature search.
* ``autointerp``: explain features with the model itself and score the explanations.
* ``plots``: the book's figures and the set-up that puts them on the static site.
* ``bench``: speed of harvesting and training, measured in one run.
* ``browser_model``: the model as one ONNX graph for the reader's browser, checked against
  TransformerLens; ``live_site``: the live pages (``lens.html``, ``steer.html``) that run it.
* ``errors``: the library's own exceptions (a damaged or missing file, an invalid argument, the hub
  out of reach) and how the command line shows them; ``files``: atomic writes, checked JSON reads;
  ``sae_folder``: what an SAE folder in SAELens's format must hold, checked before it is loaded.

The heavy libraries (transformers, transformer_lens' loaders, sae_lens) are imported where they
are first used, so that ``import interp_lib`` stays quick.
"""

from . import profiles
from .data import probe_texts
from .encoding import encode_texts
from .errors import DamagedFileError, InterpLibError, InvalidArgumentError, MissingFileError
from .metrics import evaluate
from .models import DEFAULT_MODEL, HubUnavailableError, cache_dir, load_model
from .zoo import RELEASES, feature_url, list_saes, load_sae, sae_path

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
