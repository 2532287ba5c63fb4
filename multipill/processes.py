"""The processes a run is spread over, as accelerate sees them: one place so every part agrees."""
from __future__ import annotations

import os

import torch
from accelerate import PartialState


def process_state() -> PartialState:
    """accelerate's process state. Launched as several processes on a machine without CUDA (`accelerate launch
    --multi_gpu --num_processes N` or `torchrun`), they train together over gloo on the CPU."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.cuda.is_available())
