"""stadapt checkpoints: the files, their format and versions, and `hf-hub:` checkpoint ids."""
