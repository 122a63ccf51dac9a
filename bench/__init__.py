"""The benchmark harness of issue 8 (``make bench``); see docs/benchmarks.md."""
