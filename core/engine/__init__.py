"""One run: orchestration, the epoch loop, optimizers and schedules, callbacks."""
