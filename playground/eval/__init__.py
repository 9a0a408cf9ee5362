"""Evaluation shared by every digit generator: a held-out classifier and sample-quality metrics."""
