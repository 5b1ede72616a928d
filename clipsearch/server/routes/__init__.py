"""The HTTP routes, one module per concern: search, items (metadata, thumbnails, media),
library (status, indexing)."""
