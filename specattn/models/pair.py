"""Load a draft/verifier pair as configured in ``conf/model/*.yaml``.

A pair is either two models (``draft.path`` set: e.g. TinyLlama-1.1B -> Llama-2-7B) or
*self-speculative* (``draft.layers`` set): the draft is a subset of the verifier's own decoder
layers, sharing its weights and tokenizer, as in Draft&Verify / SWIFT.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)

from ..core.errors import SpecAttnError
from ..core.hub import hub_reachable
from .byte_tokenizer import byte_tokenizer
from .layers import check_draft_layers
from .sources import hub_hint, resolve_path

SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


@dataclass
class ModelPair:
    """The two models of one experiment and their shared tokenizer."""

    name: str
    draft: PreTrainedModel
    verifier: PreTrainedModel
    tokenizer: object
    draft_layers: list[int] | None  # verifier layer behind each draft layer (self-speculative pairs)

    @property
    def n_draft_layers(self) -> int:
        return self.draft.config.num_hidden_layers

    @property
    def n_verifier_layers(self) -> int:
        return self.verifier.config.num_hidden_layers


def _from_pretrained(factory, path: str, role: str, **kwargs):
    is_hub_id = not Path(path).exists()
    if is_hub_id and not hub_reachable():
        kwargs["local_files_only"] = True  # use the HF cache if it has the weights, without retrying the network
    try:
        return factory.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as error:  # what a damaged file raises (validate checks first)
        if is_hub_id and isinstance(error, OSError):
            raise hub_hint(path, role, error) from error
        if is_hub_id:
            raise
        raise SpecAttnError(f"{role}={path}: could not load ({type(error).__name__}: {error})".splitlines()[0]
                            + ": check the folder's files, or download the model again") from error


def _random_model(spec: DictConfig, dtype: torch.dtype, seed: int) -> PreTrainedModel:
    settings = OmegaConf.to_container(spec.config, resolve=True)
    config = AutoConfig.for_model(**settings)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def _is_random(spec: DictConfig) -> bool:
    return spec.get("path") is None and spec.get("init") == "random"


def _load_one(spec: DictConfig, role: str, dtype: torch.dtype, seed: int):
    """(model, tokenizer) for one side of the pair."""
    if _is_random(spec):
        return _random_model(spec, dtype, seed), byte_tokenizer()
    path = resolve_path(str(spec.path), f"{role}.path", spec.get("parts"))
    model = _from_pretrained(AutoModelForCausalLM, path, f"{role}.path", dtype=dtype)
    tokenizer = _from_pretrained(AutoTokenizer, path, f"{role}.path")
    return model, tokenizer


def load_tokenizer(model_cfg: DictConfig):
    """The pair's tokenizer (the verifier's, as :func:`load_pair` returns it) without any weights: a run cuts its
    token windows with it, and refuses too few of them, before the models load."""
    spec = model_cfg.verifier
    if _is_random(spec):
        return byte_tokenizer()
    path = resolve_path(str(spec.path), "model.verifier.path", spec.get("parts"))
    return _from_pretrained(AutoTokenizer, path, "model.verifier.path")


def check_architecture(model: PreTrainedModel, role: str) -> None:
    """Refuse model families whose attention we do not reproduce exactly (softcapping, windows)."""
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise SpecAttnError(
            f"{role}: model_type {config.model_type!r} is not supported yet "
            f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "attn_logit_softcapping", None):
        raise SpecAttnError(f"{role}: logit soft-capping is not supported")
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    if sliding or (config.model_type == "mistral" and getattr(config, "sliding_window", None)):
        raise SpecAttnError(
            f"{role}: sliding-window attention layers are not supported yet (their KV reads are not the causal prefix); "
            "use a model with full attention in every layer"
        )


def layer_subset(verifier: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A model running only ``layers`` of ``verifier`` (in order), sharing its parameters.

    Built on the meta device and filled with the verifier's own tensors (no copy); non-persistent
    buffers (rotary frequencies) are taken from the verifier too.
    """
    layers = check_draft_layers(layers, verifier.config.num_hidden_layers)
    config = copy.deepcopy(verifier.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    rename = {f"layers.{old}.": f"layers.{new}." for new, old in enumerate(layers)}
    pattern = re.compile(r"layers\.(\d+)\.")

    def draft_name(name: str) -> str | None:
        match = pattern.search(name)
        if match is None:
            return name
        new = rename.get(match.group(0))
        return None if new is None else name.replace(match.group(0), new, 1)

    with torch.device("meta"):
        draft = AutoModelForCausalLM.from_config(config, dtype=verifier.dtype)
    state = {}
    for name, tensor in verifier.state_dict(keep_vars=True).items():
        new = draft_name(name)
        if new is not None:
            state[new] = tensor
    draft.load_state_dict(state, assign=True, strict=True)
    verifier_buffers = dict(verifier.named_buffers())
    for name, buffer in list(draft.named_buffers()):
        if buffer.is_meta:
            source = next(old for old in verifier_buffers if draft_name(old) == name)
            module_name, _, attr = name.rpartition(".")
            draft.get_submodule(module_name)._buffers[attr] = verifier_buffers[source]
    return draft.eval()


def load_pair(model_cfg: DictConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> ModelPair:
    """Load the verifier and the draft of ``model_cfg`` on ``device`` in ``dtype``, in eval mode."""
    verifier, tokenizer = _load_one(model_cfg.verifier, "model.verifier", dtype, seed)
    check_architecture(verifier, "model.verifier")
    verifier.eval().to(device)  # before layer_subset, so a self-speculative draft shares device tensors
    draft_spec = model_cfg.draft
    draft_layers = None
    if draft_spec.get("layers") is not None:
        draft_layers = list(draft_spec.layers)
        draft = layer_subset(verifier, draft_layers)
    else:
        draft, draft_tokenizer = _load_one(draft_spec, "model.draft", dtype, seed + 1)
        check_architecture(draft, "model.draft")
        if draft.config.vocab_size != verifier.config.vocab_size or len(draft_tokenizer) != len(tokenizer):
            raise SpecAttnError(
                f"model.draft and model.verifier use different tokenizers (vocab {len(draft_tokenizer)} vs "
                f"{len(tokenizer)}): cross-tokenizer pairs are not supported yet; pick a draft of the verifier's family"
            )
    draft.eval().to(device)
    return ModelPair(str(model_cfg.name), draft, verifier, tokenizer, draft_layers)
