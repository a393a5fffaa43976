"""Figures from saved results only."""
