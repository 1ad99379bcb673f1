"""Judging SAEs and conclusions: the evaluator, evidence (intervals, nulls, findings), held-out
text, SAEBench's metrics and feature absorption."""
