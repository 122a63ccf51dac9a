"""The apps the gateway is compared with, and the benchmark's slow sink."""
