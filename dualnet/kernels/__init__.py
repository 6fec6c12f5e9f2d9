"""Device code and its loaders: Cython, CUDA (`conv.cu`) and the pure-xp reference."""
