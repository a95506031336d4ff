"""Dataset loaders (real formats), synthetic data, and the tensors the stages train on."""
