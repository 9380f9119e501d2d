"""Speculative decoding with sparse verification (``experiment=decode``).

* :mod:`~specattn.decode.kv_cache`: a static KV cache for a batch of sequences of ragged lengths;
* :mod:`~specattn.decode.acceptance`: greedy acceptance and speculative sampling;
* :mod:`~specattn.decode.engine`: the loop (draft proposes, the verifier reads what each sequence's
  method selected, acceptance, both caches keep the accepted tokens).
"""
