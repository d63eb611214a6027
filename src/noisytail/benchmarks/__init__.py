"""The benchmarks behind BENCHMARKS.md, as library code; ``scripts/bench_*.py`` are their thin
command-line drivers (options, printing) and the tests import these modules."""
