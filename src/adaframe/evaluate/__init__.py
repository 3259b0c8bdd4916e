"""Evaluation of models and runs on stored features: one split, a run for a setting, the metrics and the cost model."""
