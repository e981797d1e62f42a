"""dominant-patterns: find, evaluate and study dominant patterns of image classifiers."""

from dominant_patterns import model_zoo, photo_pool, timm_models  # noqa: F401  (register model families, datasets)
from dominant_patterns.api import evaluate_pattern, find_dominant_pattern, wrap_classifier
from dominant_patterns.models import ClassifierWrapper, build_model

__all__ = ["ClassifierWrapper", "build_model", "evaluate_pattern", "find_dominant_pattern", "wrap_classifier"]
__version__ = "0.1.0"
