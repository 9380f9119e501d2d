"""KV-selection methods. Each lives in its own module and has a ``conf/method/<name>.yaml``:

===========  ======================================================  ==========================
name         class                                                   what it reads
===========  ======================================================  ==========================
dense        :class:`specattn.methods.dense.Dense`                    everything (the reference)
specattn     :class:`specattn.methods.specattn.SpecAttn`              the draft's top-p nucleus
quest        :class:`specattn.methods.quest.Quest`                    pages by key min/max bounds
streaming    :class:`specattn.methods.streaming.StreamingLLM`         sinks + recent window
oracle_topp  :class:`specattn.methods.oracle_topp.OracleTopP`         the verifier's own nucleus
draft_topk   :class:`specattn.methods.draft_topk.DraftTopK`           the draft's top-k keys
random       :class:`specattn.methods.random_chunks.RandomChunks`     random chunks
===========  ======================================================  ==========================

Budgets of quest, streaming and random: :class:`specattn.methods.budget.Budget`.
"""

from .base import LayerView, SampleContext, SelectionMethod, instantiate_method
from .budget import Budget
from .dense import Dense
from .draft_topk import DraftTopK
from .oracle_topp import OracleTopP
from .quest import Quest
from .random_chunks import RandomChunks
from .specattn import SpecAttn
from .streaming import StreamingLLM

__all__ = ["LayerView", "SampleContext", "SelectionMethod", "instantiate_method", "Budget", "Dense", "DraftTopK",
           "OracleTopP", "Quest", "RandomChunks", "SpecAttn", "StreamingLLM"]
