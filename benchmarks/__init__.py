"""Benchmarks run by hand or by `nox -s bench` (see docs/benchmarks.md); not part of the package."""
