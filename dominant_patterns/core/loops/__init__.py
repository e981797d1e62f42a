"""The optimisation loops every attack runs in, and the settings they share.

An attack supplies its step and keeps the state the step changes on itself (its ``state_dict``); the
loops own the rest. :func:`run_steps` is the one loop (passes over the data, epoch/step limits or
``trainer.budget``, the pass count, the anytime-curve hook, checkpoints and resume, progress):

* :mod:`~dominant_patterns.core.loops.core`: :func:`run_steps`, :class:`TrainerSettings`, :class:`LoopOwner`.
* :mod:`~dominant_patterns.core.loops.delta`: the steps of attacks that optimize one tensor
  (:func:`optimize_pattern`, :func:`optimize_iterations`, :func:`signed_gradient_epochs`).
* :mod:`~dominant_patterns.core.loops.feeds`: what each step gets (:class:`Feed`, :class:`Rebatcher`).
* :mod:`~dominant_patterns.core.loops.budget`: what a fit spends (:class:`PassMeter`) and the :class:`Curve` hook.

The generators (GAP, NAG, AAA), UAP and SGA call :func:`run_steps` with their own step.
"""

from dominant_patterns.core.loops.budget import Curve, PassMeter
from dominant_patterns.core.loops.core import LogFn, LoopOwner, NonFiniteLossError, TrainerSettings, run_steps
from dominant_patterns.core.loops.delta import optimize_iterations, optimize_pattern, signed_gradient_epochs
from dominant_patterns.core.loops.feeds import Feed, Rebatcher

__all__ = ["Curve", "Feed", "LogFn", "LoopOwner", "NonFiniteLossError", "PassMeter", "Rebatcher",
           "TrainerSettings", "optimize_iterations", "optimize_pattern", "run_steps", "signed_gradient_epochs"]
