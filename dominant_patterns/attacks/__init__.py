"""Universal attacks: the dominant pattern and the re-implemented baselines (one file each)."""

from dominant_patterns.attacks.base import GradientAttack, UniversalAttack
from dominant_patterns.attacks.dominant import DominantPattern

__all__ = ["DominantPattern", "GradientAttack", "UniversalAttack"]
