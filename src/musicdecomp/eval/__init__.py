"""Evaluation: metrics, probes and result tables."""
