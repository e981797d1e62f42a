"""dominant-patterns: find, evaluate and study dominant patterns of image classifiers."""

from dominant_patterns.api import evaluate_pattern, find_dominant_pattern, wrap_classifier
from dominant_patterns.data import photo_pool  # noqa: F401  (registers the photo_pool dataset)
from dominant_patterns.models import timm_family, zoo  # noqa: F401  (register the model families)
from dominant_patterns.models.classifier import ClassifierWrapper, build_model

__all__ = ["ClassifierWrapper", "build_model", "evaluate_pattern", "find_dominant_pattern", "wrap_classifier"]
__version__ = "0.1.0"
