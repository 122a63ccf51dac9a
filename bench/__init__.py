"""The side-by-side benchmark harness (``make bench``); see docs/benchmarks.md."""
