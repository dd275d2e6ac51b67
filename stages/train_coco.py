"""Stage train@coco_clip and train@coco_t5 (coco/dvc.yaml): the COCO CVAEs on shards + cache.

t2i train coco_clip                                          # CPU or one GPU
torchrun --nproc_per_node=8 --no-python t2i train coco_clip  # 8 GPUs: DDP over NCCL

Each is conditioned on the caption embeddings of the encoder train.<model>.encoder names.
"""

from pathlib import Path

import torch

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.embeddings import encoder_identity
from pipeline.data.pairs import ShardCaptionPairs
from pipeline.data.resident import ResidentCaptionPairs
from pipeline.distributed import start_distributed, stop_distributed
from pipeline.jsonfile import read_json
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import fit
from stages.fingerprint import training_fingerprint
from stages.layout import COCO_SHARDS, embeddings_dir, epochs_dir, live_dir, model_dir, state_file


def run(name: str, params_path: Path) -> None:
    spec = model_spec(name)
    p = spec.train_params(load_params(params_path))
    device, ranks = start_distributed(resolve_device(p.device))
    generator = make_deterministic(p.seed, device)
    cuda = device.type == "cuda"
    index = read_json(COCO_SHARDS / "index.json", "shard index JSON", "run `dvc repro` again")

    def pairs(subset: str) -> ShardCaptionPairs | ResidentCaptionPairs:
        shards, counts = (
            sorted(COCO_SHARDS.glob(f"{subset}-*.tar")),
            index["subsets"].get(subset, {}),
        )
        if p.resident_images:
            return ResidentCaptionPairs(
                shards,
                embeddings_dir(p.encoder, "coco"),
                images=counts.get("images", 0),
                batch_size=p.batch_size,
                device=device,
                channels_last=p.channels_last and cuda,
                key=f"train.{name}.resident_images",
            )
        return ShardCaptionPairs(
            shards,
            embeddings_dir(p.encoder, "coco"),
            pairs=counts.get("captions", 0),
            batch_size=p.batch_size,
            shuffle_buffer=p.shuffle_buffer,
            workers=p.workers,
            device=device,
            channels_last=p.channels_last and cuda,
        )

    train, test = pairs(p.subset), pairs(p.eval_subset)
    model = spec.build(p, image_size=index["image_size"], text_dim=train.text_dim).to(device)
    if p.channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    if p.compile and cuda:
        model.compile()  # in place: batch_losses calls the compiled forward
    fit(
        model,
        train,
        test,
        p,
        name=name,
        amp=p.amp and cuda,
        keep_epochs=p.keep_epochs,
        cond_null_p=p.cond_null_p,
        generator=generator,
        state_path=state_file(name),
        live_dir=live_dir(name),
        fingerprint=training_fingerprint(f"t2i train {name}", model, p),
        keep_dir=epochs_dir(name),
    )
    if ranks.main:
        identity = encoder_identity(embeddings_dir(p.encoder, "coco")).as_config()
        save_model(
            model_dir(name), model, name, {"dataset": "coco", "encoder": p.encoder, **identity}
        )
    stop_distributed()
