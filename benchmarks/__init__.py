"""pesa's benchmarks: ``python -m benchmarks`` (``make bench``) writes BENCHMARKS.md.

Every figure is a ratio against a baseline measured in the same run on the same machine;
servers run in their own processes on free loopback ports. See docs/benchmarks.md.
"""
