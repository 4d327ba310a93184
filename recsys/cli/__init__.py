"""The ``recsys`` command line: one module per command family over typed library functions."""
