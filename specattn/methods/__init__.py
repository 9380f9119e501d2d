"""KV-selection methods: each a small dataclass in its own module, composing a scorer and a selector
(:mod:`.base`), with a ``conf/method/<name>.yaml`` holding its ``_target_`` and fields:

=============  ==========================================================  ====================================
name           class                                                       scorer + selector
=============  ==========================================================  ====================================
dense          :class:`specattn.methods.dense.Dense`                       none: reads everything
specattn       :class:`specattn.methods.specattn.SpecAttn`                 draft rows + nucleus
draft_topk     :class:`specattn.methods.draft_topk.DraftTopK`              draft rows + top-k keys
draft_snapkv   :class:`specattn.methods.draft_snapkv.DraftSnapKV`          draft rows (window) + budget
oracle_topp    :class:`specattn.methods.oracle_topp.OracleTopP`            verifier rows + nucleus
quest          :class:`specattn.methods.quest.Quest`                       page bounds + budget
streaming      :class:`specattn.methods.streaming.StreamingLLM`            recency + budget (sinks kept)
random         :class:`specattn.methods.random_chunks.RandomChunks`        random + budget
=============  ==========================================================  ====================================

Selectors: :mod:`.selectors` (nucleus, top-k keys, a budget's top chunks, always-visible sinks/window);
budgets: :class:`specattn.methods.budget.Budget`; the nucleus itself: :mod:`.nucleus`.
"""

from .base import (
           ChunkScorer,
           LayerView,
           Method,
           SampleContext,
           Scorer,
           instantiate_method,
)
from .budget import Budget
from .dense import Dense
from .draft_rows import DraftAttention
from .draft_snapkv import DraftSnapKV
from .draft_topk import DraftTopK
from .oracle_topp import OracleTopP
from .quest import Quest
from .random_chunks import RandomChunks
from .selectors import Nucleus, Selector, TopChunks, TopKeys, Visible
from .specattn import SpecAttn
from .streaming import StreamingLLM
from .verifier_rows import VerifierAttention

__all__ = ["ActiveMethod", "Budget", "ChunkScorer", "Dense", "DraftAttention", "DraftSnapKV", "DraftTopK", "LayerView",
           "Method", "Nucleus", "OracleTopP", "Quest", "RandomChunks", "SampleContext", "Scorer", "Selector", "SpecAttn",
           "StreamingLLM", "TopChunks", "TopKeys", "VerifierAttention", "Visible", "instantiate_method"]
