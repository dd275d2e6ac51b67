"""Image preparation for the shards: RGB, a square of side ``size``, re-encoded as JPEG.

Speed: ``Image.draft`` asks libjpeg to decode at 1/2, 1/4 or 1/8 scale (a DCT-domain
downscale) when the target is that much smaller, so a 640x480 COCO photo bound for 224x224
is decoded at 320x240: a fraction of the work of a full decode (benchmarks/pack_images.py).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import multiprocessing
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from pipeline.errors import PipelineError

RESIZE_MODES = ("resize", "center_crop")
_CHUNK = 16  # images a worker prepares per task


def _draft_request(width: int, height: int, size: int, mode: str) -> tuple[int, int]:
    """The smallest decode size that the final resize still shrinks from (never enlarges)."""
    if mode == "resize":
        return size, size
    scale = size / min(width, height)
    return math.ceil(width * scale), math.ceil(height * scale)


def prepare_image(
    data: bytes, size: int, mode: str = "resize", *, draft: bool = True
) -> Image.Image:
    """Decode to RGB (COCO holds grayscale and CMYK JPEGs too) and make it size x size.

    resize: squash the whole image to a square (aspect not kept), as a plain
    ``Resize((size, size))`` does. center_crop: scale the short side to ``size``, then take the
    central square.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}: expected one of {RESIZE_MODES}")
    image = Image.open(io.BytesIO(data))
    if draft:
        image.draft("RGB", _draft_request(*image.size, size, mode))
    image = image.convert("RGB")
    if mode == "resize":
        return image.resize((size, size), Image.BICUBIC)
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)  # no timestamps: same pixels, same bytes
    return out.getvalue()


def load_prepared_jpeg(path: Path, size: int, mode: str, quality: int) -> bytes:
    return encode_jpeg(prepare_image(Path(path).read_bytes(), size, mode), quality)


def _prepare_task(task: tuple[str, str, int, str, int]) -> bytes:
    path, sha256, size, mode, quality = task
    data = Path(path).read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise PipelineError(f"{path}: changed since it was verified; rerun coco_download")
    return encode_jpeg(prepare_image(data, size, mode), quality)


def _prepare_chunk(tasks: list[tuple[str, str, int, str, int]]) -> list[bytes]:
    return [_prepare_task(task) for task in tasks]


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the stage (the parent) stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def prepare_jpegs(
    files: Iterable[tuple[str, str]], size: int, mode: str, quality: int, workers: int
) -> Iterator[bytes]:
    """Prepared JPEG bytes of (path, sha256) pairs, in input order, on ``workers`` processes.

    Streams: at most ``2 * workers`` chunks of images are in flight, so memory does not grow
    with the number of images. Interrupted (an error downstream, Ctrl-C, SIGTERM), it cancels
    what has not started and lets each worker finish its chunk, so no worker is killed while
    it sends a result: ``multiprocessing.Pool.terminate`` can, and then hangs on the half
    message. Close the generator (``contextlib.closing``) to stop at once.
    """
    tasks = ((path, sha, size, mode, quality) for path, sha in files)
    if workers <= 1:
        yield from map(_prepare_task, tasks)
        return
    chunks = iter(lambda: list(itertools.islice(tasks, _CHUNK)), [])
    executor = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_ignore_sigint
    )
    try:
        window = deque(
            executor.submit(_prepare_chunk, c) for c in itertools.islice(chunks, 2 * workers)
        )
        while window:
            done = window.popleft().result()
            window.extend(executor.submit(_prepare_chunk, c) for c in itertools.islice(chunks, 1))
            yield from done
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
