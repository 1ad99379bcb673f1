"""Training SAEs: the homebrew trainer, SAELens's trainer on the same data, the matched-L0 sweep,
retraining the zoo, and the training command line."""
