"""The paper's COCO figures (§3.2): Fig. 6 captions, Fig. 7 held-out images, Fig. 8 unseen
captions, Figs. 9 and 10 the epoch captions at each kept epoch. Caption-only samples are drawn
at evaluate.<model>.temperature with guidance evaluate.<model>.guidance."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from pipeline.evaluate import caption_sample_rows, hwc, sample_images
from pipeline.figures import image_grid, save_png


def coco_figures(model, encoder, p, first, epochs: list[Path], generator, out: Path) -> None:
    """The figures under ``out``. ``first``: (images, reconstructions, conditions) of the
    first held-out images; ``epochs``: weights of the kept epochs, loaded into ``model`` in
    turn after the final weights' rows (the model is left at the last of them)."""
    device = next(model.parameters()).device
    scale = max(1, 64 // model.config.image_size)

    def rows(captions: list[str]) -> list:
        vectors = torch.from_numpy(encoder.encode(captions)).to(device)
        return caption_sample_rows(model, vectors, p.samples, generator, p.temperature, p.guidance)

    def grid(rows_: list, labels: list[str], figure: str, label_width: int = 260) -> None:
        image = image_grid(rows_, labels, scale=scale, label_width=label_width)
        save_png(image, out / figure)

    grid(rows(p.captions), [t[:40] for t in p.captions], "fig6_captions.png")
    x, recon, c = first
    only_text = sample_images(model, c, generator, p.temperature, p.guidance)
    grid(
        [hwc(x), hwc(recon), hwc(only_text)],
        ["original", "image + caption", "caption only"],
        "fig7_heldout.png",
        110,
    )
    grid(rows(p.unseen_captions), [t[:40] for t in p.unseen_captions], "fig8_unseen.png")
    epoch_rows = rows(p.epoch_captions)  # the final weights first, then each kept epoch
    labels = [f"final: {t[:30]}" for t in p.epoch_captions]
    for path in epochs:
        model.load_state_dict({k: v.to(device) for k, v in load_file(str(path)).items()})
        epoch_rows += rows(p.epoch_captions)
        labels += [f"ep {int(path.stem[6:])}: {t[:30]}" for t in p.epoch_captions]
    grid(epoch_rows, labels, "fig9_10_epochs.png")
