"""flowengine: a low-code backend runtime."""

__version__ = "0.1.0"
