"""Held-out COCO evaluation, streamed: memory stays flat in the number of images scored.

For each batch of held-out images (and each one's first caption) it takes the reconstruction
through the posterior mean, the test loss terms, and a caption-only sample of the caption,
and hands real images and samples to ``CaptionOnlyScores`` (FID, KID, CLIP scores). Only
per-image numbers stay: three reconstruction metrics, the Inception features and CLIP
embeddings. The first ``keep`` images, reconstructions and conditions are kept for Fig. 7.

Batches are ``p.batch_size`` and samples are drawn batch by batch from one generator, so the
numbers are those of scoring every image at once in batches of that size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from pipeline.data.pairs import HeldOutPairs
from pipeline.evaluate import posterior_mean_reconstructions, sample_images
from pipeline.finite import require_finite_tensor
from pipeline.image_metrics import reconstruction_per_image, summarise_reconstruction
from pipeline.sample_quality import CaptionOnlyScores


@dataclass
class HeldOutResult:
    reconstruction: dict
    test_loss_per_image: dict[str, float]
    caption_only: dict
    images: int
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, reconstructions, conditions

    def metrics(self, subset: str, image_size: int, encoder: str, nelbo: bool) -> dict:
        """eval.json's content. ``nelbo``: the loss is BCE + KL, a Bernoulli decoder's
        negative ELBO, so it is reported as ``test_nelbo_nats`` too."""
        losses = self.test_loss_per_image
        metrics = {
            "reconstruction": self.reconstruction,
            "test_loss_per_image": losses,
            "conditions": {
                "images": self.images,
                "image_size": image_size,
                "subset": subset,
                "encoder": encoder,
                "reconstruction": "decoder(posterior mean, caption)",
            },
        }
        if nelbo:
            metrics["test_nelbo_nats"] = losses["loss"]
        metrics["caption_only"] = self.caption_only
        return metrics


@torch.no_grad()
def evaluate_held_out(
    model: torch.nn.Module,
    batches: Iterable[HeldOutPairs],
    p,
    name: str,
    device: torch.device,
    generator: torch.Generator,
) -> HeldOutResult:
    """Scores model ``name`` on a stream of held-out batches as its evaluate section ``p``
    (EvaluateCoco, params key models.<name>.evaluate) says, keeping the first
    ``p.figure_images`` for Fig. 7; ``generator`` draws the caption-only samples (at
    p.temperature, with guidance p.guidance). Images are at the model's own size."""
    key, image_size, keep = f"models.{name}.evaluate", model.config.image_size, p.figure_images
    model.eval()
    scores = CaptionOnlyScores(p, key, device, image_size)
    per_image, totals, count = [], {}, 0
    firsts: list[tuple] = []
    for batch in batches:
        x, c = batch.images.to(device), batch.conditions.to(device)
        recon = posterior_mean_reconstructions(model, x, c, p.batch_size)
        require_finite_tensor(recon, f"evaluate {name}: reconstructions")
        per_image.append(reconstruction_per_image(x, recon))
        for term, value in model.batch_losses(x, c).items():  # summed over the batch
            totals[term] = totals.get(term, 0.0) + float(value)
        samples = sample_images(model, c, generator, p.temperature, p.guidance)
        require_finite_tensor(samples, f"evaluate {name}: caption-only samples")
        scores.add(x, samples, batch.captions)
        if count < keep:
            firsts.append((x[: keep - count].cpu(), recon[: keep - count].cpu(), c[: keep - count]))
        count += len(x)
    first = tuple(torch.cat(parts) for parts in zip(*firsts, strict=True))
    return HeldOutResult(
        reconstruction=summarise_reconstruction(per_image),
        test_loss_per_image={k: v / max(count, 1) for k, v in totals.items()},
        caption_only=scores.result(),
        images=count,
        first=first,
    )
