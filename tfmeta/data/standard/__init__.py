"""The standard few-shot benchmarks with their published class splits (lists in `lists/`)."""
