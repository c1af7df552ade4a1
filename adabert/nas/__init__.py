"""The architecture search: ops and search spaces (data in `search_spaces/*.yaml`), architectures (`arch.json`),
the supernet, cost models and budgets, the choice estimator and the searcher."""
