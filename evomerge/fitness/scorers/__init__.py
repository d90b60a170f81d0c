"""Ready-made ``kind: python`` scoring functions; each is also an example of the calling convention."""
