"""Ray Tune trainables: one training loop, many algorithms."""
