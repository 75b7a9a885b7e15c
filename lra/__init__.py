"""The LRA harness: task data, sweeps, reports, benchmarks. Knows nothing of models."""
