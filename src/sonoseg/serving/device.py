"""Where and how a network computes: the device, the precision (fp32 or bf16 autocast) and the memory
format. Training, prediction, export and the cost table all take these decisions from here, so a
model is served the way it was measured (docs/performance.md)."""

from __future__ import annotations

import logging
import os

import torch

from sonoseg.data.preprocess import normalize_tensor
from sonoseg.data.provenance import cpu_model
from sonoseg.errors import SonosegError
from sonoseg.serving.options import PRECISIONS, check_device_name

log = logging.getLogger(__name__)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """Matrix units for bf16 (AMX) or AVX512-BF16 instructions, detected from the CPU's flags, and open to the
    kernels torch runs with: torch held to AVX2 (ATEN_CPU_CAPABILITY=avx2) or oneDNN held below its bf16
    instructions (ONEDNN_MAX_CPU_ISA=AVX2), as a cluster's environment or an emulation of an AVX2 machine
    may hold them, emulates bf16 on such a CPU too.

    Without them PyTorch still runs bf16 on the CPU, but emulated and slower than fp32.
    """
    if not cpu_flags() & {"amx_bf16", "avx512_bf16"}:
        return False
    if not cpu_kernels().startswith("AVX512"):
        return False
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()  # its old name
    return not limit or limit in ("ALL", "DEFAULT") or any(isa in limit for isa in ("BF16", "AMX", "FP16", "AVX10"))


def cpu_kernels() -> str:
    """The instruction set of the CPU kernels torch dispatches to ("AVX512", "AVX2", ...): fp32 results differ
    between them in the last digits, and a training's path with them."""
    return torch.backends.cpu.get_cpu_capability()


def cuda_has_fast_bf16(device: torch.device) -> bool:
    """bf16 tensor cores (compute capability 8.0, Ampere, and newer); older GPUs only emulate bf16."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 where the device runs it fast (a CUDA GPU with bf16 support, a CPU with AMX or
    AVX512-BF16 whose kernels torch is not held below them: cpu_has_fast_bf16), fp32 elsewhere. ``fp32`` and
    ``bf16`` are taken as asked."""
    if requested not in PRECISIONS:
        raise SonosegError(f"train.precision: {requested!r} is not one of {PRECISIONS}")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SonosegError("train.precision: bf16 asked for, but this CUDA device does not support bf16")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if cuda_has_fast_bf16(device) else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def has_grouped_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


def use_channels_last(model: torch.nn.Module, device: torch.device, precision: str) -> bool:
    """channels_last where bench/bench_train.py measured it to pay (docs/performance.md).

    CPU, bf16: oneDNN's bf16 convolutions want NHWC (16x faster than NCHW for a 3x3 convolution even
    where bf16 is emulated). CPU, fp32: NCHW - channels_last gave U-net no gain on an AVX2 CPU. CUDA:
    tensor cores want NHWC for dense convolutions; grouped/depthwise ones are often slower there, so
    they stay NCHW (not yet measured on a GPU by this project).
    """
    if device.type == "cpu":
        return precision == "bf16"
    if device.type == "cuda":
        return not has_grouped_convolutions(model)
    return False


class FastPath:
    """How one run computes: the resolved precision and memory format, applied to a model and its inputs."""

    def __init__(
        self, model: torch.nn.Module, device: torch.device, precision: str = "auto", normalization: dict | None = None
    ):
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.channels_last = use_channels_last(model, device, self.precision)
        self.normalization = normalization

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_tensor(x, self.normalization)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits in fp32; under bf16 autocast only the network runs in bf16 (the loss, the metrics
        and BatchNorm's running statistics stay fp32)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return model(self.prepare_input(x)).float()

    def forward_with_side_outputs(
        self, model: torch.nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """forward for a network with side heads (deep supervision): (final logits, side logits), fp32."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits, sides = model.forward_with_side_outputs(self.prepare_input(x))
        return logits.float(), [side.float() for side in sides]

    def describe(self) -> str:
        return f"{self.precision}{' + channels_last' if self.channels_last else ''}"


def select_device(requested: str, option: str = "train.device") -> torch.device:
    """The torch device ``requested`` names (check_device_name); a CUDA device that is not there is
    refused, naming ``option``."""
    check_device_name(requested, option)
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        assigned = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        if (
            assigned and assigned != "-1"
        ):  # a scheduler or a GPU slot gave this job a GPU: the CPU is not what was meant
            log.warning(
                "%s: 'auto': this job was given a GPU (CUDA_VISIBLE_DEVICES=%s), but PyTorch sees no CUDA device (%s): "
                "it computes on the CPU, far slower; set %s: cuda to stop instead",
                option,
                assigned,
                "a PyTorch built without CUDA" if torch.version.cuda is None else "no driver it can use?",
                option,
            )
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SonosegError(f"{option}: {requested!r} asked for, but no CUDA device is visible")
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            # A job holding a GPU slot sees its one device only (CUDA_VISIBLE_DEVICES, sonoseg.serving.gpu).
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise SonosegError(
                f"{option}: {requested!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible"
                + (
                    f" (CUDA_VISIBLE_DEVICES={visible}: ask for 'cuda', the device this job was given)"
                    if visible
                    else ""
                )
            )
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    """The device as a training's history records it: ``cpu``, or ``cuda:<index>`` (``cuda`` alone is the
    process's current CUDA device; under a GPU slot the one device the job sees, sonoseg.serving.gpu)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.current_device() if device.index is None else device.index}"
    return str(device)


def processor_name(device: torch.device) -> str:
    """What computes on ``device``, by name: a CUDA GPU's as torch reports it (``NVIDIA H100 80GB HBM3``),
    else the CPU's model name, as the cost table's ``cpu`` column gives it (cpu_model:
    /proc/cpuinfo's ``model name``, else what the platform says), and the kernels torch runs there
    (``Intel(R) Xeon(R) Processor with AVX512 kernels``): one CPU held to AVX2 trains otherwise in fp32."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} with {cpu_kernels()} kernels"


def make_deterministic(device: torch.device) -> None:
    """CPU kernels are deterministic already; on CUDA ask for deterministic kernels where they exist.

    (Only on CUDA: use_deterministic_algorithms imports torch's compiler stack, seconds per job.)
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS's first use
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
