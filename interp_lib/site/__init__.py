"""The static site: figures, feature pages and dashboards, the live pages and the model exported for
the reader's browser."""
