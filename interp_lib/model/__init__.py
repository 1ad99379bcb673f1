"""The language model: loading it, the lean forward, hook names, activations and their cache,
tokens, and the one encoder from text to SAE features."""
