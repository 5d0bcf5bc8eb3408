"""lmsmith: build your own language model end to end."""

__version__ = "0.1.0"
