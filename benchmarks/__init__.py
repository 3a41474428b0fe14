"""Performance benchmarks (run as modules: ``python -m benchmarks.<name>``); results go to
``benchmarks/results/`` and the docs. Quality benchmarks against exact optima are
``python -m jobs.benchmark``."""
