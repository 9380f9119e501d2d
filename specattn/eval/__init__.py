"""Teacher-forced evaluation: perplexity under each method's sparse verification (the paper's protocol),
per-layer coverage, and the perplexity experiments' per-sample rows and summary."""
