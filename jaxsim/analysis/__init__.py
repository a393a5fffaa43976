"""Reads checkpoints and metrics: algorithm predictors, phase labels, plateau detection."""
