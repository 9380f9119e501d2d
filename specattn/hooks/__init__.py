"""Everything that plugs into transformers: the attention functions registered with its attention
interface (draft capture, sparse verification, the graph decoder's attention), the fused modules that
replace a Llama/Qwen2 layer's parts for the graph decoder, and the forward-call helpers."""
