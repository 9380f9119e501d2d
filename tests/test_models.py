"""Model loading through the real paths, self-speculative drafts, and loading errors."""

import pytest
import torch
from omegaconf import OmegaConf

from specattn.core.errors import SpecAttnError
from specattn.models.byte_tokenizer import byte_tokenizer
from specattn.models.pair import layer_subset, load_pair
from specattn.models.sources import package_file, resolve_path

from .conftest import CONF


def test_saved_tiny_model_loads_through_the_folder_path(tiny_model_dir, tiny_pair):
    assert (tiny_model_dir / "config.json").is_file()
    assert tiny_pair.n_verifier_layers == 6 and tiny_pair.n_draft_layers == 4
    assert tiny_pair.draft_layers == [0, 2, 4, 5]
    text = "Call me Ishmael."
    assert tiny_pair.tokenizer.decode(tiny_pair.tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_draft_shares_the_verifier_parameters(tiny_pair):
    draft, verifier = tiny_pair.draft, tiny_pair.verifier
    assert draft.model.layers[1].self_attn.q_proj.weight.data_ptr() == \
        verifier.model.layers[2].self_attn.q_proj.weight.data_ptr()
    assert draft.model.embed_tokens.weight.data_ptr() == verifier.model.embed_tokens.weight.data_ptr()
    assert [layer.self_attn.layer_idx for layer in draft.model.layers] == [0, 1, 2, 3]


def test_full_layer_subset_reproduces_the_verifier(tiny_pair):
    verifier = tiny_pair.verifier
    same = layer_subset(verifier, list(range(verifier.config.num_hidden_layers)))
    ids = torch.randint(3, 259, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(same(ids).logits, verifier(ids).logits)


def test_layer_subset_runs_exactly_the_chosen_layers(tiny_pair):
    verifier = tiny_pair.verifier
    ids = torch.randint(3, 259, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        hidden = verifier.model.embed_tokens(ids)
        positions = torch.arange(20)[None]
        rotary = verifier.model.rotary_emb(hidden, positions)
        for index in (0, 2, 4, 5):
            hidden = verifier.model.layers[index](hidden, position_embeddings=rotary, position_ids=positions)
        expected = verifier.model.norm(hidden)
        got = tiny_pair.draft.model(ids).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("layers", [[], [0, 0], [3, 1], [0, 6]])
def test_bad_draft_layers_are_refused(tiny_pair, layers):
    with pytest.raises(SpecAttnError, match="model.draft.layers"):
        layer_subset(tiny_pair.verifier, layers)


def test_missing_hub_weights_offline_say_where_to_look(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = OmegaConf.load(CONF / "model" / "llama.yaml")
    with pytest.raises(SpecAttnError) as error:
        load_pair(cfg, torch.device("cpu"), torch.float32)
    message = str(error.value)
    assert "model.verifier.path=meta-llama/Llama-2-7b-hf" in message
    assert "local folder" in message and "\n" not in message


def test_bad_local_paths_are_refused(tmp_path):
    with pytest.raises(SpecAttnError, match="no such GGUF file"):
        resolve_path(str(tmp_path / "x.gguf"), "model.verifier.path")
    with pytest.raises(SpecAttnError, match="no config.json"):
        resolve_path(str(tmp_path), "model.verifier.path")
    with pytest.raises(SpecAttnError, match="not installed"):
        package_file("pkg:no_such_package_xyz/model.gguf")


def test_mismatched_tokenizers_are_refused(tiny_model_dir, tmp_path):
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    other = OmegaConf.to_container(cfg.verifier, resolve=True)
    other["config"]["vocab_size"] = 300
    cfg.verifier.path = str(tiny_model_dir)
    cfg.draft = other
    with pytest.raises(SpecAttnError, match="different tokenizers"):
        load_pair(cfg, torch.device("cpu"), torch.float32)


def test_byte_tokenizer_round_trips_unicode():
    tokenizer = byte_tokenizer()
    text = "naïve café — Æsop"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
