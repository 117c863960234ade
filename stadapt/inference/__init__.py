"""The inference engine: the one multi-view loop and its fusion, and what eval, predict and extract-features
make of it."""
