"""Textual inversion for the latent backend: one placeholder token of `VECTORS` vectors per defect type.

The prompt of a defect type is "Anomaly *" with * its placeholder (method.md section 2). The vectors
are `nn.Parameter`s held by the denoiser; `PlaceholderEmbedding` puts them in front of the frozen text
encoder's token table, so no row of the pretrained table can change, by construction (diffusers'
training example instead trains the whole table and restores the other rows after each step).
Saved in diffusers' textual-inversion format (`{token: (VECTORS, dim) tensor}` in a safetensors file;
multi-vector tokens are spelt `<t> <t>_1 <t>_2 <t>_3`), so `pipeline.load_textual_inversion` reads it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from panda.errors import PandaError

VECTORS = 4
PROMPT = "Anomaly {}"
MAX_LENGTH = 77  # both LDM and Stable Diffusion pad prompts to 77 tokens
FALLBACK_WORDS = ("defect", "anomaly")


def slug(defect_type: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", defect_type.lower()).strip("-") or "defect"


def placeholder(defect_type: str) -> str:
    return f"<panda-{slug(defect_type)}>"


def spelt(token: str, vectors: int = VECTORS) -> list[str]:
    """The tokenizer entries of a multi-vector token, as `load_textual_inversion` names them."""
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def prompt(defect_type: str, vectors: int = VECTORS) -> str:
    return PROMPT.format(" ".join(spelt(placeholder(defect_type), vectors)))


def word_id(tokenizer: Any, word: str) -> int | None:
    """The id of `word` when the tokenizer has it as one token (not the unknown token), else None."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    return ids[0] if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def init_word(tokenizer: Any, defect_type: str, chosen: str | None) -> str:
    """`finetune.init_word`, or else the defect type's name (or one of its words) when the tokenizer
    knows it as one token, else a generic word."""
    if chosen is not None:
        if word_id(tokenizer, chosen) is None:
            raise PandaError(
                f"finetune.init_word = '{chosen}' is not one token of this text encoder's vocabulary; "
                "pick a single common word (e.g. crack, scratch) or null for the defect type's name"
            )
        return chosen
    words = [defect_type, *re.split(r"[^A-Za-z0-9]+", defect_type), *FALLBACK_WORDS]
    for word in words:
        if word and word_id(tokenizer, word) is not None:
            return word
    raise PandaError(
        f"defect type '{defect_type}': none of {words} is one token of this text encoder's vocabulary; "
        "set finetune.init_word"
    )


def add_placeholders(tokenizer: Any, defect_types: list[str], vectors: int = VECTORS) -> int:
    """Add every type's tokens to the tokenizer (in order); returns the id of the first one."""
    names = [name for t in defect_types for name in spelt(placeholder(t), vectors)]
    clash = [n for n in names if n in tokenizer.get_vocab()]
    if clash:
        raise PandaError(f"the tokenizer already has the token {clash[0]}; rename the defect type")
    first = len(tokenizer)
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    if ids != list(range(first, first + len(names))):
        raise PandaError("the tokenizer did not give the placeholder tokens consecutive ids")
    return first


class PlaceholderEmbedding(nn.Module):
    """A token table: the frozen pretrained rows, then the placeholder rows from `vectors` (in order)."""

    def __init__(self, base: nn.Embedding, vectors: list[nn.Parameter], first_id: int) -> None:
        super().__init__()
        self.base, self.first_id = base, first_id
        self.vectors = nn.ParameterList(vectors)

    @property
    def weight(self) -> torch.Tensor:
        """The pretrained rows, as `get_input_embeddings().weight` reads them (e.g. to initialise
        tokens again on a text encoder that already holds placeholders)."""
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base(ids.clamp(max=min(self.first_id, self.base.num_embeddings) - 1))
        rows = torch.cat(list(self.vectors)).to(out.dtype)
        new = ids >= self.first_id
        return torch.where(new[..., None], rows[(ids - self.first_id).clamp(0, len(rows) - 1)], out)


def install(text_encoder: nn.Module, vectors: list[nn.Parameter], first_id: int) -> None:
    """Put the placeholder rows in front of the text encoder's table (once; a second call updates them)."""
    table = text_encoder.get_input_embeddings()
    base = table.base if isinstance(table, PlaceholderEmbedding) else table
    text_encoder.set_input_embeddings(PlaceholderEmbedding(base, vectors, first_id))


def token_ids(tokenizer: Any, text: str) -> torch.Tensor:
    return tokenizer(
        [text], padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids


def save_embedding(path: Path, defect_type: str, vectors: torch.Tensor) -> None:
    from safetensors.torch import save_file

    save_file({placeholder(defect_type): vectors.detach().float().cpu().contiguous()}, str(path))


def load_embedding(path: Path, defect_type: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))[placeholder(defect_type)]
