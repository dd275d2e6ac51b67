"""Small real inputs that tests and benchmarks build (never used by a stage)."""
