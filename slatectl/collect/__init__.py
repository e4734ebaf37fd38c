"""Offline datasets from promoted checkpoints (the end of the pipeline)."""
