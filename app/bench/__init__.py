"""Benchmarks (`./scripts/bench`): side-by-side measurements printed as tables with ratios.

They run on a throwaway embedded server, never on the configured database, and write their
tables and plots to `bench-results/` (git-ignored). Plotting needs the `bench` extra.
"""
