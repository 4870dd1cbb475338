"""Conceptual benchmark models calibrated per basin (GR4J), to score learned models against."""
