"""Stage train@coco_clip and train@coco_t5 (coco/dvc.yaml): the COCO CVAEs on shards + cache.

t2i train coco_clip                                          # CPU or one GPU
torchrun --nproc_per_node=8 --no-python t2i train coco_clip  # 8 GPUs: DDP over NCCL

Each is conditioned on the caption embeddings of the encoder its entry's ``conditioning`` names;
rank 0 holds models/<name>/.lock (one writer per model) and publishes the curves after the model.
"""

from contextlib import nullcontext
from pathlib import Path

import torch

from pipeline.checkpoint import save_model
from pipeline.config import load_params
from pipeline.data.embeddings import encoder_identity
from pipeline.data.pairs import Placement, ShardCaptionPairs
from pipeline.data.resident import ResidentCaptionPairs
from pipeline.distributed import start_distributed, stop_distributed
from pipeline.jsonfile import read_json
from pipeline.lock import model_lock
from pipeline.models.registry import build, image_shape
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitData, FitRun, clear_live, fit, publish_live
from stages.fingerprint import training_fingerprint
from stages.layout import COCO_SHARDS, embeddings_dir, epochs_dir, live_dir, model_dir, state_file


def run(name: str, params_path: Path) -> None:
    entry = load_params(params_path).model(name)
    device, ranks = start_distributed(resolve_device(entry.train.device))
    lock = model_lock(model_dir(name), f"t2i train {name}") if ranks.main else nullcontext()
    with lock:
        if ranks.main:
            clear_live(live_dir(name))
        _train(name, entry, device, ranks)
        if ranks.main:
            publish_live(live_dir(name))
    stop_distributed()


def _train(name: str, entry, device, ranks) -> None:
    p = entry.train
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
                embeddings_dir(entry.conditioning, "coco"),
                images=counts.get("images", 0),
                batch_size=p.batch_size,
                placement=Placement(device, p.channels_last and cuda),
                key=f"models.{name}.train.resident_images",
            )
        return ShardCaptionPairs(
            shards,
            embeddings_dir(entry.conditioning, "coco"),
            pairs=counts.get("captions", 0),
            batch_size=p.batch_size,
            shuffle_buffer=p.shuffle_buffer,
            workers=p.workers,
            placement=Placement(device, p.channels_last and cuda),
        )

    train, test = pairs(p.subset), pairs(p.eval_subset)
    sizes = {"image_size": index["image_size"], "text_dim": train.text_dim}
    model = build(f"models.{name}.arch", entry.class_name, entry.arch, **sizes).to(device)
    if p.channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    if p.compile and cuda:
        model.compile()  # in place: batch_losses calls the compiled forward
    fingerprint = training_fingerprint(f"t2i train {name}", model, p, entry.arch)
    run = FitRun(name, generator, fingerprint, state_file(name), live_dir(name), epochs_dir(name))
    fit(model, FitData(train, test), p, run)
    if ranks.main:
        meta = {"name": name, "class": entry.class_name, "data": "coco"}
        meta |= {"conditioning": entry.conditioning, "cond_null_p": p.cond_null_p}
        meta |= encoder_identity(embeddings_dir(entry.conditioning, "coco")).as_config()
        save_model(model_dir(name), model, meta | {"image_shape": image_shape("coco", sizes)})
