"""The one training loop: every model is an nn.Module with ``batch_losses(*batch)``.

``batch_losses`` returns terms summed over the batch (the first, ``loss``, is optimised);
the loop reports each per image, for train and test, once an epoch, through dvclive.

Run it through the stages, which read params.yaml:

    t2i train fmnist_label                                  # CPU or one GPU (device: auto)
    dvc repro train@fmnist_label                            # the same, cached
    torchrun --nproc_per_node=4 --no-python t2i train coco_clip            # 4 GPUs, one node
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \
        --rdzv-endpoint=HOST:29500 --no-python t2i train coco_clip          # 2 nodes x 8 GPUs

Under torchrun the model is wrapped in DistributedDataParallel (NCCL on GPU, gloo on CPU),
each rank reads its own WebDataset shards, and rank 0 alone writes checkpoints and logs.

After every epoch the full state (weights, Adam moments, RNG, history) is written to one
file. A rerun with the same params resumes from it; on CPU the result is bit-identical to an
uninterrupted run. Raising ``epochs`` continues training, and so does a change of
``keep_epochs`` that names no epoch already trained but not kept; any other change starts
afresh.

No non-finite number reaches the weights. A step whose loss or gradient norm is not finite
is skipped (no optimizer update, BatchNorm statistics restored) and counted in the epoch's
``train/nonfinite_steps``. After ``max_nonfinite_steps`` consecutive skips, an epoch that
skipped more than ``max_nonfinite_share`` of its steps (so always one that skipped them all),
or a non-finite test loss, the run stops with a :class:`NonFiniteTraining` error that names
the model, epoch, step and term. Nothing is saved then: the resume state of the last finished
epoch stays as it was, and dvclive's metrics file is removed (no metric from a failed run).

Nothing read back is trusted (pipeline/checkpoint.py): a resume state whose tensors fail
their recorded sha256 or are non-finite is refused with one line; the kept epochs are
resumed only when every file ``keep_epochs`` names up to the resumed epoch is there with the
sha256 recorded when it was written, else training starts afresh and writes them again.
``keep_dir`` always ends holding exactly the kept epochs ``keep_epochs`` names.

``warmup_steps`` ramps the learning rate linearly from ``lr / warmup_steps`` to ``lr`` over
the first optimizer steps.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.checkpoint import (
    kept_problem,
    load_state,
    restore_state,
    save_kept_epoch,
    save_state,
    verify_state,
    write_kept,
)
from pipeline.config import FitSpec
from pipeline.data.batches import Batches
from pipeline.errors import PipelineError
from pipeline.models.guidance import drop_conditions

log = logging.getLogger(__name__)


def fused_adam_supported(model: nn.Module) -> bool:
    """Whether torch's fused Adam (one kernel over all parameters) can update ``model``:
    floating-point parameters on the CPU or CUDA. On CPU torch otherwise updates one tensor at
    a time; fused is 1.3-1.4x faster a step for the MLP CVAEs (benchmarks/fused_adam.py),
    the same update up to float rounding."""
    return all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters()
    )


def steps_per_epoch(data: Batches) -> int:
    """Optimizer steps in one epoch of ``data`` (its len counts examples, not batches)."""
    return math.ceil(len(data) / data.batch_size)


def one_cycle_lr(peak: float, step: int, total: int, warm: float = 0.25) -> float:
    """The one-cycle schedule (Smith & Topin 2017, as torch's OneCycleLR): cosine up from
    peak/25 to ``peak`` over the first ``warm`` of the ``total`` steps, then cosine down to
    peak/25e4. The judge reaches 0.92 in 6 epochs with it, against 12 at a constant rate."""
    up = max(1, int(warm * total))

    def cosine(start: float, end: float, frac: float) -> float:
        return end + (start - end) * (1 + math.cos(math.pi * min(1.0, frac))) / 2

    if step <= up:
        return cosine(peak / 25, peak, step / up)
    return cosine(peak, peak / 25e4, (step - up) / max(1, total - up))


class NonFiniteTraining(PipelineError):
    """Training produced non-finite numbers ``max_nonfinite_steps`` times in a row."""


@dataclass
class StepGuard:
    """Counts skipped steps; raises once ``limit`` consecutive steps were non-finite, or
    (``end_epoch``) once more than ``share`` of an epoch's steps were."""

    name: str
    limit: int
    share: float = 0.5
    epoch: int = 0
    skipped: int = 0  # in this epoch
    steps: int = 0  # in this epoch
    consecutive: int = 0

    @staticmethod
    def problem(terms: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> str | None:
        """What went non-finite in a step, or None when the step may update the weights."""
        bad = [k for k, v in terms.items() if not math.isfinite(float(v.detach()))]
        if bad:
            return ", ".join(bad) + " (loss term)"
        return None if math.isfinite(float(grad_norm)) else f"gradient norm ({float(grad_norm)})"

    def record(self, problem: str | None, step: int) -> None:
        """Count a skipped step; raise once ``limit`` steps in a row were skipped."""
        self.steps += 1
        if problem is None:
            self.consecutive = 0
            return
        self.skipped += 1
        self.consecutive += 1
        log.warning(
            "%s: epoch %d step %d: %s not finite; step skipped",
            self.name,
            self.epoch,
            step,
            problem,
        )
        if self.consecutive >= self.limit:
            raise NonFiniteTraining(
                f"train {self.name}: stopped at epoch {self.epoch}, step {step}: {problem} not "
                f"finite in {self.consecutive} consecutive steps (max_nonfinite_steps "
                f"{self.limit}); no model written, the resume state of the last finished "
                "epoch is kept. Lower the learning rate or raise warmup_steps."
            )

    def end_epoch(self) -> None:
        """Raise when more than ``share`` of this epoch's steps were skipped (all, always)."""
        if self.skipped and (self.skipped == self.steps or self.skipped > self.share * self.steps):
            raise NonFiniteTraining(
                f"train {self.name}: stopped after epoch {self.epoch}: {self.skipped} of its "
                f"{self.steps} steps were not finite and skipped (max_nonfinite_share "
                f"{self.share}); no model written, the resume state of the last finished "
                "epoch is kept. Check that the inputs are finite, lower the learning rate or "
                "raise warmup_steps."
            )


def inputs_digest(paths: list[Path]) -> str:
    """sha256 over every file of ``paths`` (files or folders): their relative names and bytes."""
    files = sorted(
        {f for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()}
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_fingerprint(model: nn.Module, params: dict, inputs: str | None = None) -> str:
    """What must match for a saved state to be resumed: params, architecture and inputs.

    ``inputs``: the digest of what the run depends on; a training stage passes that of its
    declared DVC deps, code and data (stages/fingerprint.py). Without it, the code of the
    model's classes and of this loop stands in. ``epochs`` should be left out of ``params``
    so that a longer run continues a shorter one.
    """
    if inputs is None:
        classes = {cls for module in model.modules() for cls in type(module).__mro__}
        sources = sorted(
            {inspect.getsourcefile(c) for c in classes if c.__module__.startswith("pipeline.")}
        )
        code = b"".join(Path(p).read_bytes() for p in [*sources, __file__])
        inputs = hashlib.sha256(code).hexdigest()
    blob = {
        "params": params,
        "model": model.config.model_dump(),
        "inputs": inputs,
        "torch": torch.__version__,
    }
    return json.dumps(blob, sort_keys=True)


def _accumulate(totals: dict[str, float], terms: dict[str, torch.Tensor]) -> None:
    for name, value in terms.items():
        totals[name] = totals.get(name, 0.0) + float(value.detach())


def _per_image(totals: dict[str, float], count: int) -> dict[str, float]:
    """Sums over every rank's images, divided by their number."""
    if _distributed():
        names = sorted(totals)
        packed = torch.tensor([totals[n] for n in names] + [count], dtype=torch.float64)
        dist.all_reduce(packed)
        totals, count = dict(zip(names, packed[:-1].tolist(), strict=True)), int(packed[-1])
    return {k: v / max(count, 1) for k, v in totals.items()}


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _autocast(model: nn.Module, amp: bool):
    """bf16 autocast where ``amp`` asks for it: on CUDA, and on the CPU (fast where the CPU
    has bf16 matrix units, e.g. AMX; benchmarks/cas_bf16.py). fp32 otherwise."""
    device = next(model.parameters()).device
    enabled = amp and device.type in ("cuda", "cpu")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class BatchLosses(nn.Module):
    """The model's ``batch_losses`` as a forward, so DistributedDataParallel can wrap it.

    ``cond_null_p`` > 0: each row's condition (the batch's second tensor) is replaced by the
    null condition with that probability (whole-condition dropout, for guidance); 0 draws
    nothing, so the run is the same as without it."""

    def __init__(self, model: nn.Module, cond_null_p: float = 0.0):
        super().__init__()
        self.model, self.cond_null_p = model, cond_null_p

    def forward(self, *batch):
        if self.cond_null_p:
            x, c, *rest = batch
            batch = (x, drop_conditions(c, self.cond_null_p), *rest)
        return self.model.batch_losses(*batch)


@dataclass(frozen=True)
class EpochOptions:
    """How :func:`train_one_epoch` takes its steps; each field may keep its default.

    ``grad_clip``: the gradient-norm clip (None or 0: none). ``amp``: bf16 autocast (CUDA and
    CPU). ``losses``: the module whose forward gives the loss terms; under torchrun the
    DistributedDataParallel-wrapped :class:`BatchLosses` (None: ``BatchLosses(model)``).
    ``guard``: skips and counts non-finite steps (None: one that never stops the run).
    ``lr_at()``: the learning rate of the next optimizer step (None: the optimizer's own)."""

    grad_clip: float | None = None
    amp: bool = False
    losses: nn.Module | None = None
    guard: StepGuard | None = None
    lr_at: Callable[[], float] | None = None


def train_one_epoch(
    model: nn.Module,
    data: Batches,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    options: EpochOptions = EpochOptions(),
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``data``, each step as ``options`` say; ``desc`` labels the progress bar."""
    model.train()
    grad_clip, amp, lr_at = options.grad_clip, options.amp, options.lr_at
    losses = options.losses or BatchLosses(model)
    guard = options.guard or StepGuard("model", limit=1 << 30)
    totals: dict[str, float] = {}
    count = 0
    steps = -(-len(data) // data.batch_size)
    join = losses.join() if isinstance(losses, DistributedDataParallel) else nullcontext()
    with join:  # ranks may hold different numbers of batches: join() keeps them in step
        for step, batch in enumerate(
            tqdm(data.batches(generator), total=steps, desc=desc, leave=False, disable=None)
        ):
            buffers = [b.detach().clone() for b in model.buffers()]
            with _autocast(model, amp):
                terms = losses(*batch)  # in train mode this also moves BatchNorm's statistics
            optimizer.zero_grad(set_to_none=True)
            # Mean over images: lr independent of B. Under DDP the gradients are averaged
            # over ranks, so one rank's non-finite loss makes every rank skip the same step.
            (terms["loss"] / len(batch[0])).backward()
            grad_norm = _grad_norm(model, grad_clip)
            problem = guard.problem(terms, grad_norm)
            if problem is None:
                if lr_at is not None:
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at()
                optimizer.step()
                _accumulate(totals, terms)
                count += len(batch[0])
            else:  # the batch's non-finite activations must not stay in the statistics either
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for buffer, saved in zip(model.buffers(), buffers, strict=True):
                        buffer.copy_(saved)
            guard.record(problem, step + 1)
    return _per_image(totals, count)


def _grad_norm(model: nn.Module, grad_clip: float | None) -> torch.Tensor:
    """The total gradient norm, after clipping it to ``grad_clip`` when that is set."""
    if grad_clip:
        return nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return nn.utils.get_total_norm(grads) if grads else torch.zeros(())


@torch.no_grad()
def evaluate_terms(model: nn.Module, data: Batches, amp: bool = False) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    for batch in data.batches():
        with _autocast(model, amp):
            _accumulate(totals, model.batch_losses(*batch))
        count += len(batch[0])
    return _per_image(totals, count)


@dataclass(frozen=True)
class FitData:
    """What ``fit`` trains on and tests on each epoch."""

    train: Batches
    test: Batches


@dataclass(frozen=True)
class FitRun:
    """Where one run keeps its things: its name (in errors), the random generator, the resume
    state (None: none, for a run of seconds), the dvclive folder (None: no curves), the
    fingerprint that a resume state must match, and the folder of the kept epochs."""

    name: str
    generator: torch.Generator
    fingerprint: str
    state_path: Path | None = None
    live_dir: Path | None = None
    keep_dir: Path | None = None


def partial_live_dir(live_dir: Path) -> Path:
    """Where a run's dvclive curves grow until :func:`publish_live` moves them into place."""
    return live_dir.parent / f".{live_dir.name}.partial"


def clear_live(live_dir: Path) -> None:
    """A stage that is about to replace a summary clears it first: a failed or killed run
    then leaves none, never the previous run's beside a model it did not write."""
    if live_dir.is_dir():
        shutil.rmtree(live_dir)


def publish_live(live_dir: Path) -> None:
    """Move the finished run's curves and summary into ``live_dir``: call it after the model
    (or the result) they describe is written, so metrics never outrun their model."""
    staged = partial_live_dir(live_dir)
    if not staged.is_dir():
        raise PipelineError(f"{staged}: no finished run's metrics to publish")
    clear_live(live_dir)
    os.replace(staged, live_dir)


def fit(model: nn.Module, data: FitData, spec: FitSpec, run: FitRun) -> list[dict[str, float]]:
    """Train ``model`` for ``spec.epochs``, resuming from ``run.state_path`` when it matches.
    ``spec`` (a :class:`~pipeline.config.FitSpec`) holds the whole schedule: lr and its
    ``lr_schedule`` (``constant``, with ``warmup_steps``; ``onecycle``: ``lr`` is the peak,
    :func:`one_cycle_lr`), ``amp`` (bf16 autocast, on CUDA only), ``cond_null_p`` (the share
    of rows trained on the null condition, models/guidance.py) and ``keep_epochs``.

    The weights of ``keep_epochs`` go to ``run.keep_dir/epoch-NNNN.safetensors``, their sha256
    to ``kept.json`` and the resume state; the folder ends holding exactly those epochs.
    dvclive's curves grow in :func:`partial_live_dir`; the caller publishes them with
    :func:`publish_live` once what they describe is saved. A failed run publishes nothing.
    """
    train, test, name, generator = data.train, data.test, run.name, run.generator
    keep_epochs, keep_dir, state_path = spec.keep_epochs, run.keep_dir, run.state_path
    if keep_epochs and keep_dir is None:
        raise ValueError("keep_epochs needs a keep_dir to write the weights to")
    beyond = [e for e in keep_epochs if not 1 <= e <= spec.epochs]
    if beyond:
        raise PipelineError(
            f"train {name}: keep_epochs {beyond} outside 1..epochs ({spec.epochs}); "
            "name only epochs the run trains"
        )
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        fused=fused_adam_supported(model),
    )
    rank0 = not _distributed() or dist.get_rank() == 0
    history: list[dict[str, float]] = []
    kept: dict[int, str] = {}  # kept epoch -> sha256 of its file
    steps = 0  # optimizer steps taken: the warmup's clock
    if state_path is not None and state_path.is_file():
        history, steps, kept = _resume(state_path, spec, run, model, optimizer)
    if keep_dir is not None and rank0:
        keep_dir.mkdir(parents=True, exist_ok=True)
        write_kept(keep_dir, kept)  # a fresh start clears them; dropped epochs go
    losses = BatchLosses(model, spec.cond_null_p)
    if _distributed():  # after the resume, so every rank starts from the same weights
        losses = DistributedDataParallel(losses)
    guard = StepGuard(name, spec.max_nonfinite_steps, spec.max_nonfinite_share)

    total_steps = spec.epochs * steps_per_epoch(train)

    def lr_at() -> float:
        nonlocal steps
        steps += 1
        if spec.lr_schedule == "onecycle":
            return one_cycle_lr(spec.lr, steps, total_steps)
        return spec.lr * min(1.0, steps / spec.warmup_steps) if spec.warmup_steps else spec.lr

    options = EpochOptions(
        grad_clip=spec.grad_clip, amp=spec.amp, losses=losses, guard=guard, lr_at=lr_at
    )
    live = None
    if rank0 and run.live_dir is not None:
        staged = partial_live_dir(run.live_dir)
        if staged.is_dir():
            shutil.rmtree(staged)  # a killed run's; the finished epochs are replayed below
        live = Live(str(staged), save_dvc_exp=False, dvcyaml=None, report=None)
    try:
        for row in history:  # replay finished epochs so the curves are whole after a resume
            _log_row(live, row)
        for epoch in range(len(history), spec.epochs):
            guard.epoch, guard.skipped, guard.steps = epoch + 1, 0, 0
            row = {
                f"train/{k}": v
                for k, v in train_one_epoch(
                    model, train, optimizer, generator, options, f"epoch {epoch + 1}/{spec.epochs}"
                ).items()
            }
            guard.end_epoch()
            row["train/nonfinite_steps"] = float(guard.skipped)
            test_row = evaluate_terms(model, test, spec.amp)
            bad = sorted(k for k, v in test_row.items() if not math.isfinite(v))
            if bad:
                raise NonFiniteTraining(
                    f"train {name}: stopped at epoch {epoch + 1}, after its last step: "
                    f"test {', '.join(bad)} not finite; no model written, the resume state of "
                    "the last finished epoch is kept. Lower the learning rate or raise "
                    "warmup_steps."
                )
            row.update({f"test/{k}": v for k, v in test_row.items()})
            history.append(row)
            _log_row(live, row)
            log.info(
                "epoch %d/%d %s",
                epoch + 1,
                spec.epochs,
                " ".join(f"{k}={v:.4f}" for k, v in row.items()),
            )
            if rank0:
                if epoch + 1 in keep_epochs:  # before the state: a run killed in between
                    kept[epoch + 1] = save_kept_epoch(keep_dir, epoch + 1, model)  # redoes it
                    write_kept(keep_dir, kept)
                meta = {
                    "epoch": epoch + 1,
                    "history": history,
                    "fingerprint": run.fingerprint,
                    "steps": steps,
                    "kept": {str(e): sha for e, sha in kept.items()},
                }
                if state_path is not None:
                    save_state(state_path, model, optimizer, generator, meta)
    except BaseException:
        if live is not None:  # no metric from a failed run
            shutil.rmtree(live.dir, ignore_errors=True)
        raise
    if live is not None:
        live.end()
    return history


def _resume(
    state_path: Path, spec: FitSpec, run: FitRun, model: nn.Module, optimizer
) -> tuple[list[dict[str, float]], int, dict[int, str]]:
    """(history, optimizer steps, kept epochs) of the state at ``state_path`` restored into
    ``model``, ``optimizer`` and ``generator``; empty ones when it is not to be resumed."""
    tensors, meta = load_state(state_path)
    if meta.get("fingerprint") != run.fingerprint or meta.get("epoch", 0) > spec.epochs:
        log.info("%s belongs to other params; training from scratch", state_path)
        return [], 0, {}
    verify_state(state_path, tensors, meta)  # refused, never silently replaced
    recorded = {int(e): sha for e, sha in meta.get("kept", {}).items()}
    wanted = [e for e in spec.keep_epochs if e <= meta["epoch"]]
    problem = kept_problem(run.keep_dir, recorded, wanted) if wanted else None
    if problem is not None:
        log.warning("%s; training afresh to write the kept epochs again", problem)
        return [], 0, {}
    restore_state(tensors, meta, model, optimizer, run.generator)
    log.info("resuming from %s at epoch %d", state_path, meta["epoch"])
    return meta["history"], meta.get("steps", 0), {e: recorded[e] for e in wanted}


def _log_row(live: Live | None, row: dict[str, float]) -> None:
    if live is None:
        return
    for name, value in row.items():
        live.log_metric(name, value)
    live.next_step()
