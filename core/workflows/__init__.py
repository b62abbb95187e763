"""Workflows: what several callers (the CLI and the jobs behind the pages) do with the engine, written once: a
distillation from its student to its table (distillation.py)."""
