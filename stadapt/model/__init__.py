"""The video model: a frozen image backbone, adapters at the block loop's hook points, pooling and a head."""
