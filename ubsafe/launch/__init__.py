"""Executing stages: the worker entry point, the local executor, Slurm through submitit, status."""
