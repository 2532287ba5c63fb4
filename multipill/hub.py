"""Fail fast when the Hugging Face hub cannot be reached, instead of waiting through minutes of retries."""
from __future__ import annotations

import os
import socket
import threading

HUB_HOST = "huggingface.co"


class OfflineError(RuntimeError):
    """A download was needed and the network is not there; the message names the offline alternative."""


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when HF_HUB_OFFLINE is unset and a TCP connection to the hub opens within timeout seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((os.environ.get("MULTIPILL_HUB_HOST", HUB_HOST), 443), timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def require_hub(what: str, alternative: str) -> None:
    """Raise OfflineError at once when `what` needs the hub and it is unreachable."""
    if not hub_reachable():
        raise OfflineError(f"{what} needs a download from {HUB_HOST}, which cannot be reached. {alternative}")
