"""Tools over the library: benchmarks, visualize, export, transfer, push and the model card, quickstart, interop."""
