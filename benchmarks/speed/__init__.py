"""Speed benchmarks of the suite's own code (``python -m siambench.benchmarks.speed.bench_...``)."""
