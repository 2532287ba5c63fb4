"""multipill: identify pharmaceutical products from photos by fusing an image model with OCR-read text."""
__version__ = "0.1.0"

from .backbones import create_backbone, list_backbones  # noqa: E402
from .classifier import PillClassifier, Prediction  # noqa: E402
from .images import ImageLoadError, load_image  # noqa: E402
from .ocr import create_ocr, list_ocr, register_ocr  # noqa: E402
from .synthetic import generate_packs, render_pack  # noqa: E402

__all__ = ["PillClassifier", "Prediction", "create_backbone", "list_backbones", "create_ocr", "list_ocr",
           "register_ocr", "generate_packs", "render_pack", "load_image", "ImageLoadError", "__version__"]
