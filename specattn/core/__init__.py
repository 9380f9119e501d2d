"""The bottom layer: semantics and utilities every other layer shares, with no model, no run and no GPU
code: errors and setting checks, the nucleus reference, which keys a verification row sees, the step
layout, KV-read accounting, layer maps, head aggregation, causal attention probabilities, cache folders,
file stamps and atomic writes."""
