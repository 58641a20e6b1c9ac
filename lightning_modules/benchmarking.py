"""Speed and peak memory of one training step and one sampling step, for the suites of experiments/benchmark.py.

ddpm: networks.unet.UNet against diffusers' UNet2DModel; dpf: networks.score_fields.PerceiverIO against transformers'
Perceiver, over numbers of points and of latents. Times are medians after warm-up (CUDA synchronised); peak memory is
torch.cuda.max_memory_allocated on CUDA, and on CPU the rise of ru_maxrss over its value before the first step.
"""
from __future__ import annotations

import dataclasses
import gc
import importlib
import json
import logging
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from lightning_modules.diffusion import GaussianDiffusion
from networks.score_fields.tokens import FieldTokenizer
from networks.unet import GROUPNORM_EPS

log = logging.getLogger(__name__)

SUITES = ("ddpm", "dpf")
PRECISIONS = ("fp32", "bf16")
PHASES = ("train", "sample")
# where a learned variance doubles the output: DDPM.channel_dim and DPF.channel_dim
CHANNEL_DIM = {"ddpm": 1, "dpf": -1}
# each peer and the package it needs
PEERS = {"diffusers UNet2DModel": "diffusers", "transformers Perceiver": "transformers"}
# what the peak memory columns hold, by their short name in the column headers
MEMORY = {
    "CUDA max allocated": "torch.cuda.max_memory_allocated (weights, optimizer state and activations)",
    "RSS rise": "rise of ru_maxrss over its value before the first step (weights and inputs built: train adds "
                "gradients, optimizer state and activations), each case in a fresh spawn process",
    "RSS rise, in-process": "rise of ru_maxrss over its value before the first step, all cases in one process: a "
                            "lower bound once an earlier case peaked higher",
}


# ---------------------------------------------------------------------------------------------------- networks

def _out_channels(signal_dim: int, diffusion: GaussianDiffusion) -> int:
    return signal_dim * (2 if diffusion.learns_variance else 1)


def build_unet(settings: dict, diffusion: GaussianDiffusion) -> nn.Module:
    return instantiate(settings["net"], in_channels=settings["channels"],
                       out_channels=_out_channels(settings["channels"], diffusion), image_size=settings["image_size"])


class SampleOutput(nn.Module):
    """diffusers' models return an output object; the diffusion wants its tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, t).sample


def build_diffusers_unet(settings: dict, diffusion: GaussianDiffusion) -> nn.Module:
    """UNet2DModel with the U-Net config's widths, depth, attention resolutions, GroupNorm and dropout."""
    from diffusers import UNet2DModel

    net, size = settings["net"], settings["image_size"]
    resolutions = [size // 2**level for level in range(len(net["channel_mults"]))]
    attends = [r in net["attention_resolutions"] for r in resolutions]
    widths = [net["base_channels"] * m for m in net["channel_mults"]]
    model = UNet2DModel(
        sample_size=size, in_channels=settings["channels"], out_channels=_out_channels(settings["channels"], diffusion),
        block_out_channels=widths, layers_per_block=net["num_res_blocks"],
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        norm_num_groups=net["num_groups"], norm_eps=GROUPNORM_EPS, dropout=net["dropout"],
        # None: one head as wide as each block; diffusers takes a single head width, so h heads fit the middle block
        attention_head_dim=None if net["num_heads"] == 1 else widths[-1] // net["num_heads"],
    )
    return SampleOutput(model)


def build_perceiver_io(settings: dict, diffusion: GaussianDiffusion) -> nn.Module:
    return instantiate(settings["net"], coord_dim=settings["coord_dim"], signal_dim=settings["signal_dim"],
                       out_dim=_out_channels(settings["signal_dim"], diffusion), num_timesteps=diffusion.num_timesteps)


class PeerPerceiverField(nn.Module):
    """transformers' Perceiver as a DPF score field on our tokens: its encoder reads the context tokens and a basic
    decoder cross-attends from the query tokens (one query per query point) to the latents."""

    def __init__(self, tokenizer: FieldTokenizer, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.tokenizer, self.encoder, self.decoder = tokenizer, encoder, decoder

    def forward(self, context_coords: Tensor, context_values: Tensor, query_coords: Tensor, query_values: Tensor,
                t: Tensor) -> Tensor:
        latents = self.encoder(inputs=self.tokenizer(context_coords, context_values, t)).last_hidden_state
        return self.decoder(self.tokenizer(query_coords, query_values, t), z=latents).logits


TOKEN_OPTIONS = ("coord_bands", "coord_max_resolution", "time_bands", "time_spacing", "tokens", "embed_dim")


def build_transformers_perceiver(settings: dict, diffusion: GaussianDiffusion) -> nn.Module:
    """PerceiverModel with the PerceiverIO config's latents, widths, depth and heads (HF shares the self-attention
    block across num_blocks and cross-attends to the inputs once), and a PerceiverBasicDecoder."""
    from transformers import PerceiverConfig, PerceiverModel
    from transformers.models.perceiver.modeling_perceiver import PerceiverBasicDecoder

    net = settings["net"]
    tokenizer = FieldTokenizer(settings["coord_dim"], settings["signal_dim"],
                               num_timesteps=diffusion.num_timesteps,
                               **{k: net[k] for k in TOKEN_OPTIONS if k in net})
    width, widening = net["latent_dim"], net["widening_factor"]
    config = PerceiverConfig(
        num_latents=net["num_latents"], d_latents=width, d_model=tokenizer.out_dim, num_blocks=net["num_blocks"],
        num_self_attends_per_block=net["self_attends_per_block"], num_self_attention_heads=net["num_self_heads"],
        num_cross_attention_heads=net["num_cross_heads"], qk_channels=net.get("qk_channels"),
        v_channels=net.get("v_channels"), cross_attention_shape_for_attention="q",  # qk width = latent width, as ours
        self_attention_widening_factor=widening, cross_attention_widening_factor=widening,
        attention_probs_dropout_prob=net["dropout"], hidden_act="gelu")
    decoder = PerceiverBasicDecoder(
        config, output_num_channels=_out_channels(settings["signal_dim"], diffusion), position_encoding_type="none",
        num_channels=tokenizer.out_dim, qk_channels=width, v_channels=width, num_heads=net["num_cross_heads"],
        widening_factor=widening, use_query_residual=True)
    return PeerPerceiverField(tokenizer, PerceiverModel(config), decoder)


MODELS: dict[str, dict[str, Callable[[dict, GaussianDiffusion], nn.Module]]] = {
    "ddpm": {"fieldgen UNet": build_unet, "diffusers UNet2DModel": build_diffusers_unet},
    "dpf": {"fieldgen PerceiverIO": build_perceiver_io, "transformers Perceiver": build_transformers_perceiver},
}


# ---------------------------------------------------------------------------------------------------- one case

@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration, as plain data so that a spawn child can rebuild it.

    settings: the suite's config (net, diffusion, optimizer, sizes) with this case's sweep values filled in.
    """

    suite: str
    model: str
    precision: str
    phase: str
    device: str
    settings: dict
    warmup: int
    repeats: int
    channels_last: bool = False
    compile: bool = False


def prepare(case: Case) -> tuple[nn.Module, Callable[[], None], int]:
    """The case's network, a closure running one step of its phase, and the fields (images) that step processes.

    train: zero_grad, forward + GaussianDiffusion.training_losses, backward, optimizer step (the method's optimizer);
    sample: one ancestral step (network forward + p_sample). DPF uses as many context as query points; when
    sampling, the context is the current query values (DPF.sample with num_context = number of queries).
    """
    settings, device = case.settings, torch.device(case.device)
    diffusion = instantiate(settings["diffusion"], channel_dim=CHANNEL_DIM[case.suite])
    net = MODELS[case.suite][case.model](settings, diffusion).to(device).train(case.phase == "train")
    memory_format = torch.contiguous_format
    if case.channels_last and device.type == "cuda" and case.suite == "ddpm":
        memory_format = torch.channels_last
        net = net.to(memory_format=memory_format)
    model = torch.compile(net) if case.compile else net
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=case.precision == "bf16")
    batch = settings["batch_size" if case.phase == "train" else "sample_batch_size"]

    def uniform(*shape: int) -> Tensor:  # coordinates and signals on [-1, 1]
        return torch.rand(*shape, device=device) * 2 - 1

    if case.suite == "ddpm":
        size = settings["image_size"]
        values = uniform(batch, settings["channels"], size, size).contiguous(memory_format=memory_format)
        sampling_denoiser = model

        def training_denoiser(t: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
            return model
    else:
        num_points, coord_dim, signal_dim = settings["points"], settings["coord_dim"], settings["signal_dim"]
        values, query_coords = uniform(batch, num_points, signal_dim), uniform(batch, num_points, coord_dim)
        context_coords, context_values = uniform(batch, num_points, coord_dim), uniform(batch, num_points, signal_dim)

        def sampling_denoiser(x_t: Tensor, t: Tensor) -> Tensor:
            return model(query_coords, x_t, query_coords, x_t, t)

        def training_denoiser(t: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
            context_t = diffusion.q_sample(context_values, t)  # DPF.compute_losses: the loss is on the queries
            return lambda query_t, step: model(context_coords, context_t, query_coords, query_t, step)

    if case.phase == "sample":
        t = torch.full((batch,), diffusion.num_timesteps // 2, device=device)
        clip = settings["sampler"]["clip_denoised"]

        @torch.no_grad()
        def sampling_step() -> None:
            with autocast:
                diffusion.p_sample(sampling_denoiser, values, t, clip_denoised=clip)

        return net, sampling_step, batch

    optimizer = instantiate(settings["optimizer"], params=net.parameters())

    def training_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        t = torch.randint(0, diffusion.num_timesteps, (batch,), device=device)
        with autocast:
            loss = diffusion.training_losses(training_denoiser(t), values, t)["loss"].mean()
        loss.backward()
        optimizer.step()

    return net, training_step, batch


def max_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def measure(case: Case) -> dict:
    """Median step time over case.repeats steps after case.warmup untimed ones, and the phase's peak memory."""
    gc.collect()
    torch.manual_seed(0)
    device = torch.device(case.device)
    on_cuda = device.type == "cuda"
    net, step, items = prepare(case)
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = max_rss_bytes()
    times = []
    for i in range(case.warmup + case.repeats):
        start = time.perf_counter()
        step()
        if on_cuda:
            torch.cuda.synchronize(device)
        if i >= case.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if on_cuda else max_rss_bytes() - rss_before
    seconds = statistics.median(times)
    return {"params": sum(p.numel() for p in net.parameters()), "ms": 1e3 * seconds, "items_per_s": items / seconds,
            "peak_mib": peak / 2**20}


def run_case(case: Case, isolate: bool) -> dict:
    """`measure(case)`, in a fresh spawn process when `isolate` (ru_maxrss is a high-water mark of the process)."""
    if not isolate:
        return measure(case)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, case).result()


# ---------------------------------------------------------------------------------------------------- suites

def sweep(suite: str, settings: dict) -> list[tuple[dict, dict]]:
    """(row labels, case settings) for each size a suite measures: one for ddpm; points, then latents for dpf."""
    if suite == "ddpm":
        return [({}, settings)]
    latents, points = settings["net"]["num_latents"], settings["latent_sweep_points"]
    sizes = [({"sweep": "points", "points": n, "latents": latents}, {**settings, "points": n})
             for n in settings["points"]]
    sizes += [({"sweep": "latents", "points": points, "latents": n},
               {**settings, "points": points, "net": {**settings["net"], "num_latents": n}})
              for n in settings["latents"]]
    return sizes


def peer_version(model: str) -> Optional[str]:
    """The version of the package a peer model needs, or None when it does not import."""
    try:
        return importlib.import_module(PEERS[model]).__version__
    except ImportError as err:
        print(f"{PEERS[model]} does not import ({err}): skipped {model}")
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return (f"cpu: {names[0] if names else platform.processor() or platform.machine()} "
            f"({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")


def check_options(suite: str, device: torch.device, precisions: Sequence[str], warmup: int, repeats: int) -> None:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        raise ValueError(f"precisions must be a non-empty subset of {list(PRECISIONS)}, got {list(precisions)}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1 timed steps, got warmup={warmup}, repeats={repeats}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no GPU; use device=cpu or device=auto")


def run_suite(suite: str, settings: dict, device: torch.device, precisions: Sequence[str] = PRECISIONS,
              warmup: int = 3, repeats: int = 10, peers: bool = True, channels_last: bool = True,
              compile: bool = False, isolate_memory: bool = True) -> dict:
    """Measure every model x precision x size of a suite; returns the record that write_report writes.

    settings: the suite's config as a plain dict (conf/benchmark.yaml's ddpm or dpf: net, diffusion, optimizer,
    sampler and sizes). Rows hold params, and per phase (train, sample) ms, items_per_s and peak_mib.
    """
    check_options(suite, device, precisions, warmup, repeats)
    isolate = isolate_memory and device.type == "cpu"
    models = list(MODELS[suite])
    versions = {"torch": torch.__version__}
    skipped = []
    for peer in models[1:]:
        version = peer_version(peer) if peers else None
        if version:
            versions[PEERS[peer]] = version
        else:
            models.remove(peer)
            skipped.append(f"{peer} ({'peers=false' if not peers else PEERS[peer] + ' does not import'})")
    memory = "CUDA max allocated" if device.type == "cuda" else "RSS rise" if isolate else "RSS rise, in-process"
    record = {"suite": suite, "device": device_name(device), "versions": versions, "skipped": skipped,
              "warmup": warmup, "repeats": repeats, "memory": memory, "load_average_start": os.getloadavg(),
              "batch_size": settings["batch_size"], "sample_batch_size": settings["sample_batch_size"], "rows": []}
    results = {}  # by case: the points sweep and the latents sweep share one size
    for model in models:
        for precision in precisions:
            for labels, case_settings in sweep(suite, settings):
                row = {"model": model, "precision": precision, **labels}
                for phase in PHASES:
                    case = Case(suite, model, precision, phase, str(device), case_settings, warmup, repeats,
                                channels_last, compile)
                    key = json.dumps(dataclasses.asdict(case), sort_keys=True)
                    result = results[key] = results.get(key) or run_case(case, isolate)
                    row["params"] = result["params"]
                    row.update({f"{phase}_{key}": value for key, value in result.items() if key != "params"})
                log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
                record["rows"].append(row)
    record["load_average_end"] = os.getloadavg()
    if suite == "dpf":
        record["slopes"] = fitted_slopes(record["rows"])
    return record


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x: the exponent k of y ~ c x^k."""
    if len(x) != len(y) or len(set(x)) < 2:
        raise ValueError(f"a log-log slope needs at least two distinct x values, got x={list(x)}")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def fitted_slopes(rows: Sequence[dict]) -> list[dict]:
    """Per model and precision, the log-log slopes of step time against points and against latents: over the whole
    sweep, and for points also over its two largest sizes, where the per-point work outweighs the fixed latent work."""
    slopes = []
    for key in dict.fromkeys((row["model"], row["precision"]) for row in rows):
        entry = {"model": key[0], "precision": key[1]}
        for size in ("points", "latents"):
            runs = sorted((row for row in rows if (row["model"], row["precision"]) == key and row["sweep"] == size),
                          key=lambda row: row[size])
            for phase in PHASES:
                fits = {f"{phase} vs {size}": runs}
                if size == "points":
                    fits[f"{phase} vs points (2 largest)"] = runs[-2:]
                for name, part in fits.items():
                    sizes, times = [r[size] for r in part], [r[f"{phase}_ms"] for r in part]
                    entry[name] = loglog_slope(sizes, times) if len(set(sizes)) > 1 else None
        slopes.append(entry)
    return slopes


# ---------------------------------------------------------------------------------------------------- report

def _table(rows: Sequence[dict], columns: dict[str, Callable[[dict], object]]) -> str:
    from evaluation.report import markdown_table  # on use: spawn children need not import matplotlib

    return markdown_table([{name: value(row) for name, value in columns.items()} for row in rows], list(columns))


def _columns(record: dict, sizes: Sequence[str]) -> dict[str, Callable[[dict], object]]:
    memory = record["memory"]
    columns = {"model": lambda r: r["model"], "params (M)": lambda r: round(r["params"] / 1e6, 2),
               "precision": lambda r: r["precision"]}
    columns.update({size: (lambda r, size=size: r[size]) for size in sizes})
    if record["suite"] == "ddpm":
        columns["train img/s"] = lambda r: round(r["train_items_per_s"], 2)
    columns.update({
        "train step (ms)": lambda r: round(r["train_ms"], 1),
        f"train peak (MiB, {memory})": lambda r: round(r["train_peak_mib"]),
        "sample step (ms)": lambda r: round(r["sample_ms"], 1),
        f"sample peak (MiB, {memory})": lambda r: round(r["sample_peak_mib"]),
    })
    return columns


def plot_time_vs_points(record: dict, path: Path) -> None:
    """Log-log step time against points, one line per model / precision, train and sample side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), tight_layout=True)
    FigureCanvasAgg(figure)
    rows = [row for row in record["rows"] if row["sweep"] == "points"]
    slopes = {(s["model"], s["precision"]): s for s in record["slopes"]}
    for axis, phase in zip(figure.subplots(1, 2), PHASES):
        for key, slope in slopes.items():
            runs = [row for row in rows if (row["model"], row["precision"]) == key]
            label = f"{key[0]} {key[1]}"
            if slope[f"{phase} vs points"] is not None:
                label += (f" (slope {slope[f'{phase} vs points']:.2f}; "
                          f"{slope[f'{phase} vs points (2 largest)']:.2f} over the 2 largest)")
            axis.loglog([r["points"] for r in runs], [r[f"{phase}_ms"] for r in runs], "o-", label=label)
        axis.set(xlabel="context = query points per field", ylabel=f"{phase} step (ms)",
                 title=f"{phase} step, batch {record['batch_size' if phase == 'train' else 'sample_batch_size']}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    figure.savefig(path, dpi=120)


def render_markdown(record: dict) -> str:
    lines = [f"# Benchmark: {record['suite']}", "",
             f"- command: `{record.get('command', '')}`",
             f"- device: {record['device']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
             "- load average (1, 5, 15 min): start " + " ".join(f"{v:.2f}" for v in record["load_average_start"])
             + ", end " + " ".join(f"{v:.2f}" for v in record["load_average_end"]),
             f"- time: median of {record['repeats']} steps after {record['warmup']} warm-up steps; "
             f"batch {record['batch_size']} (train), {record['sample_batch_size']} (sample: one ancestral step)",
             f"- peak memory: {MEMORY[record['memory']]}"]
    lines += [f"- skipped: {', '.join(record['skipped'])}"] if record["skipped"] else []
    lines.append("")
    if record["suite"] == "ddpm":
        lines.append(_table(record["rows"], _columns(record, [])))
        return "\n".join(lines)
    for size, fixed in (("points", "latents"), ("latents", "points")):
        rows = [row for row in record["rows"] if row["sweep"] == size]
        lines += [f"## Cost vs {size} (context = query points)", "", _table(rows, _columns(record, [size, fixed]))]
    slope_columns = {"model": lambda s: s["model"], "precision": lambda s: s["precision"]}
    slope_columns.update({name: (lambda s, name=name: None if s[name] is None else round(s[name], 2))
                          for name in record["slopes"][0] if " vs " in name})
    lines += ["## Fitted slope of log(step time) vs log(size)", "", _table(record["slopes"], slope_columns),
              "![step time vs points](benchmark.png)", ""]
    return "\n".join(lines)


def write_report(record: dict, output_dir: Path) -> Path:
    """output_dir/benchmark.md (markdown tables), benchmark.json (the record) and, for dpf, benchmark.png."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    if record["suite"] == "dpf":
        plot_time_vs_points(record, output_dir / "benchmark.png")
    path = output_dir / "benchmark.md"
    path.write_text(render_markdown(record))
    return path
