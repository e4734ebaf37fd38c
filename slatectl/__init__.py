"""slatectl: offline-RL datasets for slate recommendation, with a checkpoint registry."""

__version__ = "0.1.0"
