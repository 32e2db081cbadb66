"""Learning machinery shared by the models: sparse GPR, baselines, metrics and MPI helpers."""
