"""Workflows: what several callers (the CLI and the jobs behind the pages) do with the engine and the advisor,
written once: resolving `freeze: auto` before a training (auto.py), a distillation from its student to its table
(distillation.py)."""
