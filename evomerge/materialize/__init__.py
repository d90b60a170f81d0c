"""Turn a Recipe into weights: streamed to disk, or written in place into a resident model."""
