"""Reading features: rankings and specialists, similarity across SAEs, per-feature statistics,
splitting, and automated interpretability."""
