"""`chatctl bench`: a pub/sub load generator that measures honestly and proves nothing was lost.

command.run_bench (called by the CLI) -> plan.py (who connects where) -> runner.py (worker
processes, worker.py) -> results.py (merged figures) -> report.py (live display, tables, JSON,
CSV). params.py holds a run's parameters and their defaults; it is light, because the CLI
reads those defaults at start-up, and so is this file.
"""
