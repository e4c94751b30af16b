"""difformer: a config-driven reproduction of DIFFormer and related scalable graph transformers."""

__version__ = "0.1.0"
