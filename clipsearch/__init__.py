"""clipsearch: search your own images and videos with CLIP-style dual encoders."""

from clipsearch.errors import ClipsearchError

__version__ = "0.1.0"
__all__ = ["ClipsearchError", "__version__"]
