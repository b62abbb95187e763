"""After (or at the end of) training, plain data in, plain data out: metrics."""
