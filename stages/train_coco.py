"""Stage train@coco_clip and train@coco_t5 (coco/dvc.yaml): the COCO CVAEs on shards + cache.

t2i train coco_clip                                          # CPU or one GPU
torchrun --nproc_per_node=8 --no-python t2i train coco_clip  # 8 GPUs: DDP over NCCL
"""

import json
import os

import torch
import torch.distributed as dist

from pipeline.checkpoint import save_model
from pipeline.data.pairs import ShardCaptionPairs
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_gated import CVAEGated
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitSpec, fit
from stages.fingerprint import training_fingerprint
from stages.layout import (
    COCO_SHARDS,
    embeddings_dir,
    epochs_dir,
    live_dir,
    model_dir,
    state_file,
)

ENCODER = {"coco_clip": "clip-vit-b-32", "coco_t5": "t5-small"}  # paper §2.2, §2.3


def _start_distributed(device: torch.device) -> tuple[torch.device, bool]:
    """Under torchrun (WORLD_SIZE > 1): join the process group; NCCL on GPU, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, True
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank() == 0


def train_coco(name: str, p) -> None:
    device, rank0 = _start_distributed(resolve_device(p.device))
    generator = make_deterministic(p.seed, device)
    cuda = device.type == "cuda"
    index = json.loads((COCO_SHARDS / "index.json").read_text())

    def pairs(subset: str) -> ShardCaptionPairs:
        return ShardCaptionPairs(
            sorted(COCO_SHARDS.glob(f"{subset}-*.tar")),
            embeddings_dir(ENCODER[name], "coco"),
            pairs=index["subsets"].get(subset, {}).get("captions", 0),
            batch_size=p.batch_size,
            shuffle_buffer=p.shuffle_buffer,
            workers=p.workers,
            device=device,
            channels_last=p.channels_last and cuda,
        )

    train, test = pairs(p.subset), pairs(p.eval_subset)
    size = index["image_size"]
    if name == "coco_clip":
        model = CVAEClip(size, train.text_dim, p.latent_dim, p.width, p.fusion,
                         p.feature_norm, p.logvar_bound)  # fmt: skip
    else:
        model = CVAEGated(size, train.text_dim, p.latent_dim, p.fusion, p.beta,
                          p.logvar_bound)  # fmt: skip
    model = model.to(device)
    if p.channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    if p.compile and cuda:
        model.compile()  # in place: batch_losses calls the compiled forward
    spec = FitSpec(
        epochs=p.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        weight_decay=p.weight_decay,
        grad_clip=p.grad_clip,
        amp=p.amp and cuda,
        keep_epochs=tuple(p.keep_epochs),
        warmup_steps=p.warmup_steps,
        max_nonfinite_steps=p.max_nonfinite_steps,
        name=name,
    )
    fit(
        model,
        train,
        test,
        spec,
        generator=generator,
        state_path=state_file(name),
        live_dir=live_dir(name),
        fingerprint=training_fingerprint(
            f"t2i train {name}",
            model,
            p.model_dump(exclude={"epochs", "keep_epochs", "max_nonfinite_steps"}),
        ),
        keep_dir=epochs_dir(name),
    )
    if rank0:
        save_model(model_dir(name), model, {"dataset": "coco", "encoder": ENCODER[name]})
    if dist.is_initialized():
        dist.destroy_process_group()
