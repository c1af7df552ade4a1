"""Tasks and their data: the task registry (GLUE layouts, custom CSV/TSV/JSONL), reading and checking files,
the held-out split, tokenised encodings and the task metrics."""
