"""Pretraining on logged data (`logged`): the GeMS slate VAE (`gems`, `gems_stack`, `gems_train`) and BPR
matrix-factorisation item embeddings (`mf`), docs/algorithms.md §2–3; library code only (registering
artifacts and the CLI live elsewhere). Every entry point runs its config's `validate()` first: a config
built in Python is refused (BadInput) before any work, as one from a config file is.
"""
