"""Small benchmark configs: the official CIFAR-10 configs shrunk to run on a laptop CPU."""
