"""Changing the model through features: steering, ablation and attribution, the logit lens, and the
checks they share."""
