"""The Study: ask → evaluate → tell with a budget, every trial recorded, resumable at any moment."""
