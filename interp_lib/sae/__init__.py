"""Sparse autoencoders: the homebrew SAEs and their variants, the sparse kernels, SAELens's on-disk
format and its checks, and the zoo of SAEs to load."""
