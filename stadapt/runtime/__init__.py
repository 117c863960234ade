"""One runtime for training and inference: the device, the precision rule and the views parser, each once."""
