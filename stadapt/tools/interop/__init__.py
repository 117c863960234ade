"""Reading checkpoints of other implementations."""
