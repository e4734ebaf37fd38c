"""Sweeps: a grid of training populations (agents × override sets × envs × seeds) run by an executor —
processes on this machine (`local`) or Ray tasks on a cluster (`ray`) — over one shared registry.

`spec.py` the typed, validated spec; `tasks.py` its expansion into tasks (one population each);
`worker.py` what runs one task (claim, train or resume, finish); `executors.py` the executors (a small
registry: local, ray); `driver.py` creates, runs and resumes a sweep; `status.py` what `sweep status`
shows. docs/sweeps.md describes the protocol and what survives a lost worker.
"""
