"""One registry for card matchers: each scores inputs (OCR text or photos) against product cards, zero-shot."""
from __future__ import annotations

from typing import Any, Callable

from .card_text import CardTextMatcher
from .clip_matcher import ClipCardMatcher
from .keypoints import KeypointCardMatcher

_MATCHERS: dict[str, Callable[..., Any]] = {"card_text": CardTextMatcher, "openclip": ClipCardMatcher,
                                            "keypoints": KeypointCardMatcher}


def register_matcher(name: str, factory: Callable[..., Any]) -> None:
    """Add a matcher: `factory(**kw)` returns an object with fit(cards, or class -> pictures) and
    scores(inputs, classes)."""
    _MATCHERS[name] = factory


def list_matchers() -> list[str]:
    return sorted(_MATCHERS)


def create_matcher(name: str = "card_text", **kw: Any):
    """'card_text' (OCR text against card words), 'openclip' (photos against card prompts and pictures) or
    'keypoints' (photos against card pictures by local features)."""
    if name not in _MATCHERS:
        raise ValueError(f"unknown card matcher {name!r}; choose from {list_matchers()}")
    return _MATCHERS[name](**kw)
