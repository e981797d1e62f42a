"""Universal attacks: the dominant pattern and the re-implemented baselines (one file each)."""

from dominant_patterns.attacks.aaa import AAA
from dominant_patterns.attacks.base import GradientAttack, UniversalAttack
from dominant_patterns.attacks.cosine_uap import CosineUAP
from dominant_patterns.attacks.dm_uap import DMUAP
from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.attacks.fff import FFF
from dominant_patterns.attacks.fg_uap import FGUAP
from dominant_patterns.attacks.ft_uap import FTUAP
from dominant_patterns.attacks.gap import GAP
from dominant_patterns.attacks.gd_uap import GDUAP
from dominant_patterns.attacks.nag import NAG
from dominant_patterns.attacks.pd_ua import PDUA
from dominant_patterns.attacks.psp_uap import PSPUAP
from dominant_patterns.attacks.sga import SGA
from dominant_patterns.attacks.sgd_uap import SGDUAP
from dominant_patterns.attacks.trm_uap import TRMUAP
from dominant_patterns.attacks.tuap import TUAP
from dominant_patterns.attacks.uap import UAP

__all__ = ["DominantPattern", "GradientAttack", "UniversalAttack",
           # baselines (one module each)
           "UAP", "SGDUAP", "TUAP", "CosineUAP", "GDUAP", "FFF", "PDUA", "FTUAP",
           # generative baselines and SGA
           "GAP", "NAG", "AAA", "SGA",
           # 2023-2025: feature gathering, dynamic maximin, and two data-free prior attacks
           "FGUAP", "DMUAP", "TRMUAP", "PSPUAP"]
