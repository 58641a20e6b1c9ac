"""One case: the median time and peak memory of a module's training step or of its sampling network step.

train: `compute_losses(batch)` + backward (+ the trainer's gradient clipping) + the method's optimizer step, on
real batches of the experiment's DataModule. sample: the network forwards one sampling step performs, found by
forward pre-hooks on `module.networks()` while `module.sample` runs (diffusion methods: over `sample_steps`
respaced steps, one step being the calls divided by the steps; other methods: the calls before any network is
called a second time), then replayed on the inputs they were given (a diffusion autoencoder decodes its encoder's
latents of training fields: its `sampling_inputs`). An operator case (benchmarks.operators) times its variant's forward
and backward on synthetic inputs. Peak memory: torch.cuda.max_memory_allocated
on CUDA; on CPU the rise of the resident set's high-water mark from its size before the first step (Linux: VmHWM,
restarted there, or VmRSS sampled by a thread where the kernel refuses the restart; without /proc ru_maxrss, which
cannot be restarted, so each case may run in a fresh spawn process); for sampling, both from before the calls are
recorded (two sampling steps). Linear-layer FLOPs: 2 in x out per point through every nn.Linear of the networks
in one more (untimed) step, x3 when training (the backward computes the input and weight gradients); on a rays
domain also the rays a step renders (training: the ray batch; sampling: every pixel of the views).
"""
from __future__ import annotations

import dataclasses
import gc
import itertools
import math
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from hydra.utils import instantiate
from torch import nn

from benchmarks.peers import PEERS
from benchmarks.runs import build_run, training_batches
from datamodules.fields import FieldBatch
from lightning_modules.base import FieldGenerativeModule
from lightning_modules.diffusion_method import DiffusionMethod

OURS = "fieldgen"
PRECISIONS = ("fp32", "bf16")
PHASES = ("train", "sample")
PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
HWM_RESTART_SLACK = 8 * 2**20  # VmHWM just after a restart may run a few pages ahead of the VmRSS read before it


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement, as plain data so that a spawn child can rebuild it.

    config: the resolved train config of the run (the sweep's value filled in); model: OURS or a peer's name.
    """

    config: dict
    model: str
    precision: str
    phase: str
    device: str
    warmup: int
    repeats: int
    batches: int
    sample_batch_size: int
    sample_steps: int
    synthetic_item_shape: Optional[tuple[int, ...]] = None


class _OneStepSeen(Exception):
    """Raised by the capturing hook to stop sampling once one step's network calls are recorded."""


Call = tuple[nn.Module, tuple, dict]


def sampling_step_calls(module: FieldGenerativeModule, num_samples: int, steps: int, **inputs) -> list[Call]:
    """The network calls (network, args, kwargs) of one sampling step of `module.sample(num_samples, **inputs)`."""
    calls: list[tuple[str, Call]] = []
    stop_at_repeat = not isinstance(module, DiffusionMethod)

    def recorder(name: str) -> Callable:
        def hook(network: nn.Module, args: tuple, kwargs: dict) -> None:
            if stop_at_repeat and any(seen == name for seen, _ in calls):
                raise _OneStepSeen
            calls.append((name, (network, args, kwargs)))
        return hook

    handles = [network.register_forward_pre_hook(recorder(name), with_kwargs=True)
               for name, network in module.networks().items()]
    options = {} if stop_at_repeat else {"steps": steps}
    generator = torch.Generator(device=module.device).manual_seed(0)
    try:
        module.sample(num_samples, generator=generator, **options, **inputs)
    except _OneStepSeen:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise RuntimeError(f"method '{module.method_name}' sampled without calling any of its networks "
                           f"{list(module.networks())} (FieldModule.networks)")
    if stop_at_repeat:
        return [call for _, call in calls]
    if len(calls) % steps:
        raise RuntimeError(f"{len(calls)} network calls over {steps} sampling steps: not the same calls per step")
    return [call for _, call in calls[:len(calls) // steps]]


def sampling_fields(datamodule, num_samples: int, device: torch.device) -> Iterator[FieldBatch]:
    """Enough training batches for `num_samples` fields, loaded only if `module.sampling_inputs` iterates them."""
    yield from training_batches(datamodule, math.ceil(num_samples / datamodule.batch_size), device)


def optimizer_of(module: FieldGenerativeModule) -> torch.optim.Optimizer:
    configured = module.configure_optimizers()
    return configured["optimizer"] if isinstance(configured, dict) else configured


def prepare_operator(case: Case) -> tuple[Callable[[], None], Callable[[], None], dict]:
    """prepare() of an operator case (benchmarks.operators): case.model is the variant; a step is its forward and
    the backward of the output's sum."""
    device = torch.device(case.device)
    run = instantiate(case.config["operator"], _convert_="all").build(case.model, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=case.precision == "bf16")

    def step() -> None:
        for leaf in run.leaves:
            leaf.grad = None
        with autocast:
            out = run.forward()
        out.float().sum().backward()

    facts = {"params": run.params, "points": run.points, "synthetic_data": True, "networks": [], "items": run.items}
    return lambda: None, step, facts


def prepare(case: Case) -> tuple[Callable[[], None], Callable[[], None], dict]:
    """(start, step, facts): `start` readies the phase once before the timed steps (sampling: records one step's
    network calls; both count in the peak memory), `step` runs one step of it; facts about the case."""
    if case.config.get("operator"):
        return prepare_operator(case)
    device = torch.device(case.device)
    datamodule, module, synthetic = build_run(case.config, case.batches, case.synthetic_item_shape)
    if case.model != OURS:
        for name, network in PEERS[case.model].build(module).items():
            setattr(module, name, network)
    module.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=case.precision == "bf16")
    facts = {"params": sum(p.numel() for network in module.networks().values() for p in network.parameters()),
             "points": module.domain.num_points, "synthetic_data": synthetic}
    facts["networks"] = list(module.networks().values())
    if case.phase == "sample":
        module.eval()
        inputs = module.sampling_inputs(sampling_fields(datamodule, case.sample_batch_size, device),
                                        case.sample_batch_size)
        calls = []
        facts["items"] = case.sample_batch_size
        if module.domain.kind == "rays":  # sample(n) renders n whole views
            facts["rays"] = case.sample_batch_size * module.domain.num_points

        def start() -> None:
            calls.extend(sampling_step_calls(module, case.sample_batch_size, case.sample_steps, **inputs))
            facts["calls"] = len(calls)
            if module.compile_net:
                module.compile_networks()

        @torch.no_grad()
        def step() -> None:
            with autocast:
                for network, args, kwargs in calls:
                    network(*args, **kwargs)

        return start, step, facts

    batches = itertools.cycle(training_batches(datamodule, case.batches, device))
    module.train()
    if module.compile_net:
        module.compile_networks()
    optimizer = optimizer_of(module)
    clip = case.config["trainer"].get("gradient_clip_val")
    facts["items"] = datamodule.batch_size
    if module.domain.kind == "rays":  # the ray batch drawn from each view of the step
        facts["rays"] = datamodule.batch_size * module.ray_sampler.count_for(module.domain.num_points)

    def step() -> None:
        batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = module.compute_losses(batch)["loss"].mean()
        loss.backward()
        if clip:  # Lightning's default gradient_clip_algorithm: by norm
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()

    return lambda: None, step, facts


def max_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def proc_status_bytes(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM: reported in kB)."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{PROC_STATUS} has no {field} line")


def start_rss_rise(poll_s: float = 2e-3) -> Callable[[], int]:
    """A function giving the rise of resident memory's peak since this call.

    Linux: the high-water mark VmHWM restarts at the current size (/proc/self/clear_refs "5"). Where the kernel
    refuses that write or ignores it (some containers), a thread samples VmRSS every `poll_s` instead (a peak
    shorter than `poll_s` can be missed). ru_maxrss cannot restart, and a spawn child starts with its parent's as a
    floor, so it is the fallback only where /proc is absent: its rise is 0 while a step stays under an earlier peak.
    """
    if not PROC_STATUS.exists():
        before = max_rss_bytes()
        return lambda: max_rss_bytes() - before
    before = proc_status_bytes("VmRSS")
    try:
        CLEAR_REFS.write_text("5")
        restarted = proc_status_bytes("VmHWM") <= proc_status_bytes("VmRSS") + HWM_RESTART_SLACK
    except (OSError, KeyError):  # refused, or a /proc without VmHWM
        restarted = False
    if restarted:
        return lambda: proc_status_bytes("VmHWM") - before
    return sampled_rss_rise(before, poll_s)


def sampled_rss_rise(before: int, poll_s: float) -> Callable[[], int]:
    """The rise over `before` of VmRSS's peak, read every `poll_s` by a thread until the returned function is called."""
    peak = [before]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(poll_s):
            peak[0] = max(peak[0], proc_status_bytes("VmRSS"))

    sampler = threading.Thread(target=poll, name="rss-peak", daemon=True)
    sampler.start()

    def rise() -> int:
        stop.set()
        sampler.join()
        return max(peak[0], proc_status_bytes("VmRSS")) - before

    return rise


def linear_flops(networks: list[nn.Module], step: Callable[[], None]) -> int:
    """Multiply-add FLOPs (2 in x out per point) of every nn.Linear of `networks` in one call of `step`."""
    total = [0]

    def count(layer: nn.Linear, args: tuple, output) -> None:
        total[0] += 2 * (args[0].numel() // layer.in_features) * layer.in_features * layer.out_features

    handles = [layer.register_forward_hook(count) for network in networks for layer in network.modules()
               if isinstance(layer, nn.Linear)]
    try:
        step()
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def matmul_peak_gflops(device: torch.device, precision: str, size: Optional[int] = None, repeats: int = 5) -> float:
    """The device's measured matmul throughput: the median GFLOP/s of size x size products (2048 on CPU, 8192 on
    CUDA) in the precision's dtype: the peak the networks' linear layers are compared with."""
    size = size or (8192 if device.type == "cuda" else 2048)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - began)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def measure(case: Case) -> dict[str, Any]:
    """Median step time over case.repeats steps after case.warmup untimed ones, and the phase's peak memory."""
    torch.manual_seed(0)
    device = torch.device(case.device)
    on_cuda = device.type == "cuda"
    start, step, facts = prepare(case)
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    gc.collect()
    gc.disable()  # as timeit: no collection inside a timed step, nor one freeing earlier garbage under the peak
    try:
        rss_rise = start_rss_rise()
        start()
        times = []
        for i in range(case.warmup + case.repeats):
            began = time.perf_counter()
            step()
            if on_cuda:
                torch.cuda.synchronize(device)
            if i >= case.warmup:
                times.append(time.perf_counter() - began)
        peak = torch.cuda.max_memory_allocated(device) if on_cuda else rss_rise()
    finally:
        gc.enable()
    seconds = statistics.median(times)
    items, networks = facts.pop("items"), facts.pop("networks")
    flops = linear_flops(networks, step) * (3 if case.phase == "train" else 1)
    rays = {"rays_per_s": facts.pop("rays") / seconds} if "rays" in facts else {}
    return {**facts, "ms": 1e3 * seconds, "items_per_s": items / seconds, "peak_mib": peak / 2**20,
            "linear_gflops": flops / seconds / 1e9, **rays}


def run_case(case: Case, isolate: bool) -> dict[str, Any]:
    """`measure(case)`, in a fresh spawn process when `isolate` (no case sees another's allocator state or, without
    /proc, its ru_maxrss)."""
    if not isolate:
        return measure(case)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, case).result()
