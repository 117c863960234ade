"""Run folders: layout, marker, lock, checkpoint rotation, recovery, best, metrics, lookup."""
