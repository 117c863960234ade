"""Benchmarks of stadapt itself (training memory and speed); data loading's is `stadapt.data.bench`."""
