"""The one training loop (train and finetune-transfer share it) and what it needs:
optimiser and schedule, the data stream, run directories, resumable trainer state."""
