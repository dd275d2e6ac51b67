"""t2i-cvae: text-to-image conditional VAEs as a cached, reproducible DVC pipeline."""

__version__ = "0.1.0"
