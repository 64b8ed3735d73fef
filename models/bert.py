"""The serving encoder: BERT in plain torch, with the weights of transformers' ``BertModel``
(all-MiniLM-L6-v2, or an artifact's fine-tuned copy of it) under their own names.

Why not transformers' ``BertModel`` at serving time: its model-loading module imports
``torch._dynamo`` with triton, ``torch.distributed.tensor`` and scipy. A process that has
loaded the shipped model and scored a batch held 843-846 MiB with it and holds 760 MiB
without it; the worker's peak fell from over 1 GiB to under it. All for a six-layer
encoder. Why not torch's own
``nn.TransformerEncoderLayer``, which is the same post-norm layer: its fused inference path
fails under autocast (bf16 activations, float weights), its ONNX export fixes the
sequence length, and dynamic int8 quantisation skips its attention projections.

So this is BERT's forward pass for inference, module for module and name for name:
embeddings -> N x (self-attention, add & LayerNorm, GELU feed-forward, add & LayerNorm).
Training keeps transformers' model; artifacts keep its weight names, which load here
unchanged. ``tests/models/test_bert.py`` checks the outputs against ``BertModel``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

# Tensors of transformers' BertModel that inference does not use: the pooler (the
# classifier mean-pools instead) and the position-id buffer (positions are 0..width-1).
UNUSED = ("pooler.", "embeddings.position_ids")


@dataclass(frozen=True, slots=True)
class BertShape:
    """The sizes of a BERT encoder, read from its ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def read(cls, config_json: Path) -> BertShape:
        """Refuses an encoder this module would not compute exactly as ``BertModel`` does."""
        config = json.loads(config_json.read_text())
        expected = {
            "model_type": "bert",
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
        }
        for key, value in expected.items():
            if config.get(key, value) != value:
                raise ValueError(f"{config_json}: {key} is {config[key]!r}, expected {value!r}")
        return cls(**{name: config[name] for name in cls.__slots__})


class BertEmbeddings(nn.Module):
    """Word + position + token-type (always type 0, one segment) embeddings, LayerNorm.
    ``drawn``: the tables drawn at random, as ``nn.Embedding`` does; else left empty, for
    weights about to be loaded (see :meth:`BertEncoder.from_bert`)."""

    def __init__(self, shape: BertShape, *, drawn: bool = True) -> None:
        super().__init__()

        def table(rows: int) -> nn.Embedding:
            if drawn:
                return nn.Embedding(rows, shape.hidden_size)
            empty: nn.Embedding = nn.Embedding.from_pretrained(  # type: ignore[no-untyped-call]
                torch.empty(rows, shape.hidden_size), freeze=False
            )
            return empty

        self.word_embeddings = table(shape.vocab_size)
        self.position_embeddings = table(shape.max_position_embeddings)
        self.token_type_embeddings = table(shape.type_vocab_size)
        self.LayerNorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        width = input_ids.shape[1]
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings.weight[:width]
            + self.token_type_embeddings.weight[0]
        )
        out: torch.Tensor = self.LayerNorm(x)
        return out


class BertSelfAttention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.heads = shape.num_attention_heads
        self.query = nn.Linear(shape.hidden_size, shape.hidden_size)
        self.key = nn.Linear(shape.hidden_size, shape.hidden_size)
        self.value = nn.Linear(shape.hidden_size, shape.hidden_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``keep``: (rows, 1, 1, width), True where a key is a real token."""

        def heads(t: torch.Tensor) -> torch.Tensor:  # (rows, heads, width, head size)
            split: torch.Tensor = t.unflatten(-1, (self.heads, -1))  # type: ignore[no-untyped-call]
            return split.transpose(1, 2)

        out = functional.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), attn_mask=keep
        )
        return out.transpose(1, 2).flatten(2)


class BertAddNorm(nn.Module):
    """LayerNorm(dense(x) + residual): the end of both halves of a layer."""

    def __init__(self, inner: int, shape: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, shape.hidden_size)
        self.LayerNorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.LayerNorm(self.dense(x) + residual)
        return out


class BertAttention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.self = BertSelfAttention(shape)
        self.output = BertAddNorm(shape.hidden_size, shape)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.output(self.self(x, keep), x)
        return out


class BertIntermediate(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(shape.hidden_size, shape.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.gelu(self.dense(x))  # exact (erf) GELU, BERT's "gelu"


class BertLayer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.attention = BertAttention(shape)
        self.intermediate = BertIntermediate(shape)
        self.output = BertAddNorm(shape.intermediate_size, shape)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, keep)
        out: torch.Tensor = self.output(self.intermediate(attended), attended)
        return out


class BertLayers(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(shape) for _ in range(shape.num_hidden_layers))


class BertEncoder(nn.Module):
    """``forward(input_ids, attention_mask)`` -> the last hidden states (rows, width, hidden),
    what ``BertModel(...).last_hidden_state`` holds."""

    def __init__(self, shape: BertShape, *, drawn: bool = True) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(shape, drawn=drawn)
        self.encoder = BertLayers(shape)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = (attention_mask != 0)[:, None, None, :]
        x: torch.Tensor = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x

    @classmethod
    def from_bert(cls, shape: BertShape, state: Mapping[str, torch.Tensor]) -> BertEncoder:
        """The encoder holding ``state``, a ``BertModel`` state dict, without copying it.
        Raises ValueError when a weight is missing or has no place here.

        Built on the meta device (no throw-away random weights), without drawing the
        embedding tables there: ``normal_`` on a meta tensor runs through torch's Python
        reference ops, which import ``torch._dynamo`` and sympy, about 140 MiB resident
        in a serving process that never compiles anything (the linear layers' uniform
        draws and the LayerNorms' fills run in C++ on meta: nothing imported)."""
        with torch.device("meta"):
            encoder = cls(shape, drawn=False)
        used = {k: v for k, v in state.items() if not k.startswith(UNUSED)}
        try:
            missing, unexpected = encoder.load_state_dict(used, strict=False, assign=True)
        except RuntimeError as exc:  # a tensor of another size
            raise ValueError(f"the encoder weights do not fit BERT: {exc}") from None
        if missing or unexpected:
            raise ValueError(
                f"the encoder weights do not fit BERT: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        return encoder.eval()
