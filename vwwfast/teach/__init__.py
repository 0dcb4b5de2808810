"""Teachers as sources of views and logits, and the teacher cache (Zarr)."""
