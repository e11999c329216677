"""Choosing the torch device: ``auto`` means CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from .errors import InputError


def available_devices() -> list[str]:
    """Names of the devices that exist here, best first, ``cpu`` always last.

    Examples
    --------
    >>> available_devices()[-1]
    'cpu'
    """
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return [*names, "cpu"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into a usable device.

    Raises
    ------
    InputError
        For an unknown name or a device that is not present on this machine.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"Device {name!r} asked for, but no CUDA GPU is available here; use --device cpu or auto.")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise InputError(f"Device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist.")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if name not in available_devices():
            raise InputError("Device 'mps' asked for, but Apple's MPS backend is not available here.")
        return dev
    raise InputError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.")
