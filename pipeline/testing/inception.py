"""An InceptionV3 weights file of the real architecture and size, with random weights.

For measuring FID/KID speed (benchmarks/sample_quality.py) and for tests, where the real
weights (`t2i weights inception`) are absent: speed does not depend on the values. No stage
uses it.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_random_inception(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's InceptionV3 architecture with random weights, saved like the real file.

    Default initialisation makes the 2048-d features vanish (~1e-8), which would make every FID
    about 0; so the batch-norm statistics are set from one pass over random images, as training
    would have, to give features of order 1 that differ between image sets. Stored in float16
    (48 MB); loading casts back to float32.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the random initialisation

    path.parent.mkdir(parents=True, exist_ok=True)
    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    torch.manual_seed(seed)
    net = RandomInception("random", ["2048"], feature_extractor_weights_path=str(empty))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the pass
            module.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8))
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save(state, path)
    empty.unlink()
    return path
