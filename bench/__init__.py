"""distill's benchmark: `python -m bench` (or `distill bench`)."""
