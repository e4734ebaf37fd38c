"""slatectl: offline-RL datasets for slate recommendation, with a checkpoint registry."""

__version__ = "0.1.0"

__all__ = ["make_env", "__version__"]


def __getattr__(name: str):
    # PEP 562: `slatectl.make_env` imports the simulator (torch) only when used, so `import slatectl`
    # (the CLI's start-up) stays light.
    if name == "make_env":
        import importlib

        return importlib.import_module("slatectl.collect.dataset_env").make_env
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
