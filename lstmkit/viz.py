"""Pictures of what a recurrent network does, for notebooks: each function returns a matplotlib ``Figure``.

>>> import numpy as np, lstmkit, lstmkit.viz as viz
>>> lstm = lstmkit.LSTM(3, 8, num_layers=2, seed=0)
>>> trace = viz.trace(lstm, np.random.default_rng(0).standard_normal((20, 3)))
>>> fig = viz.plot_trace(trace)          # gates, c and h over time; gradient norms per layer
>>> trace.gates[(0, 0)]["f"].shape       # (T, H): the forget gate of layer 0 at every step
(20, 8)

:func:`trace` accepts a :class:`~lstmkit.Recurrent` (``LSTM``, ``GRU``,
``RNN``, plugin cells) and one sequence ``(T, input_size)``;
:func:`trace_run` a run folder or a config file (what ``lstmkit trace``
draws).  The work is done in :mod:`lstmkit.learn.trace`; matplotlib is
imported only when drawing.  Where ``matplotlib.pyplot`` is already imported
(a notebook) the figures are pyplot's, so they show inline; elsewhere they
are standalone (no GUI backend needed).
"""
from __future__ import annotations

from .learn.trace import Trace, plot_grad_norms, plot_trace, save_figure, trace_model, trace_run
from .learn.trace import trace_module as trace

__all__ = ["Trace", "trace", "trace_model", "trace_run", "plot_trace", "plot_grad_norms", "save_figure"]
