"""Training and data: SGD loops, data loaders, finite-difference checks."""
