"""Gradio UI: one module per tab, plus the shared theme and helpers. Only this package imports gradio."""
