"""Pretraining on logged data: the GeMS slate VAE and BPR matrix-factorisation item embeddings.

See docs/algorithms.md §2–3. Library code only: registering artifacts and the CLI live elsewhere.
Modules: `logged` (the logged data), `gems` (the model), `gems_stack` (its objective over a leading member
dimension K ≥ 1), `gems_train` (GeMSConfig, train_gems for one member, train_gems_population for several),
`mf` (MFConfig, BPRMatrixFactorization, train_mf); both fits run on a pytorch_lightning Trainer
(`lightning_engine`, imported only when they train) or on the plain loop `engine="loop"` (`engines`).
"""
