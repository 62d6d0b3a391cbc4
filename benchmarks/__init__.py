"""Performance harness of the hot loop: ``python -m benchmarks [--quick]`` (see README.md here)."""
