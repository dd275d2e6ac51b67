"""CLIP ViT-B/32 text embeddings (paper §2.2) through open_clip: 512-d from ``encode_text``.

Fast path: CLIP's text transformer is causal, so a token never attends to the tokens after
it, and the pooled output is read at the end-of-text token. Tokens after the longest
caption's end-of-text token therefore cannot change any output: running each batch on its
first L positions (L = its longest caption) is exact. ``_encode_truncated`` is
``CLIP.encode_text`` with the context, positional embedding and causal mask cut to L.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from open_clip.transformer import text_global_pool
from safetensors import SafetensorError

from pipeline.encoders.base import EncoderInfo, TextEncoder, library_versions
from pipeline.encoders.weights import weights_error
from pipeline.hashing import sha256_file


class ClipEncoder(TextEncoder):
    name = "clip-vit-b-32"

    def __init__(self, spec, key: str, device: torch.device):
        model, weights, config_file = spec.model, spec.weights, spec.config_file
        if config_file:  # a custom architecture, e.g. the tests' tiny CLIP
            if not Path(config_file).is_file():
                raise weights_error(key, config_file, "config_file not found")
            open_clip.add_model_config(config_file)
        weight_file, quick = self._weight_file(model, weights, key)
        try:
            self.model = open_clip.create_model(
                model,
                pretrained=str(weight_file),
                device=device,
                require_pretrained=True,
                force_quick_gelu=quick if spec.quick_gelu is None else spec.quick_gelu,
            ).eval()
        except (RuntimeError, OSError, KeyError, ValueError, SafetensorError) as exc:
            raise weights_error(key, weights, f"{weight_file}: {exc}") from None
        self.tokenizer = open_clip.get_tokenizer(model)
        self.context_length = self.model.context_length
        self.device = device
        self.info = EncoderInfo(
            encoder=self.name,
            weights_id=f"{model}/{weights}",
            weights_sha256=sha256_file(weight_file),
            dim=int(self.model.text_projection.shape[1]),
            pooling="end-of-text token (encode_text)",
            normalized=False,
            max_tokens=self.context_length,
            libraries=library_versions("torch", "open_clip_torch"),
        )

    @staticmethod
    def _weight_file(model: str, weights: str, key: str) -> tuple[Path, bool]:
        """A local file, or a pretrained tag of open_clip ('openai') fetched to its cache."""
        path = Path(weights).expanduser()
        if path.is_file():
            return path, False
        config = open_clip.get_pretrained_cfg(model, weights)
        if not config:
            raise weights_error(key, weights, f"neither a file nor a pretrained tag of {model}")
        try:
            return Path(open_clip.download_pretrained(config)), bool(config.get("quick_gelu"))
        except Exception as exc:  # offline, hub unreachable: one clear message
            raise weights_error(key, weights, f"download failed: {exc}") from None

    def token_counts(self, captions: list[str]) -> list[int]:
        """BPE tokens + start and end tokens; above context_length CLIP truncates."""
        encode = self.tokenizer.encode
        return [len(encode(c)) + 2 for c in captions]

    def _embed_batch(self, captions: list[str], fast: bool) -> torch.Tensor:
        tokens = self.tokenizer(captions).to(self.device)
        if not fast:
            return self.model.encode_text(tokens)
        return self._encode_truncated(tokens)

    def _encode_truncated(self, text: torch.Tensor) -> torch.Tensor:
        m = self.model
        length = int(text.argmax(dim=-1).max()) + 1  # end-of-text is the largest token id
        text = text[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(text).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = text_global_pool(
            m.ln_final(x), text, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None)
        )
        if isinstance(m.text_projection, torch.nn.Linear):
            return m.text_projection(x)
        return x @ m.text_projection
