"""The cell interface: what a recurrent cell is, independent of how it is run.

A *cell type* holds the equations of one recurrent cell, once:

* its parameters (names, shapes, PyTorch order) for given sizes;
* its state (``("h",)`` or ``("h", "c")``); ``state[0]`` is always the output ``h``;
* a reference step forward and backward written against an array module ``xp``
  (NumPy here; CuPy runs the same code).

The engine computes the input projection of a whole sequence in one GEMM,
``gi = x @ weight_ih.T + bias_ih``, and hands the cell one time step of it
(``gi_t``, the rows of the sequences still running at step ``t``).  The cell's
step does the rest: the recurrent product, the gates, the new state.  So a new
cell needs no change to the engine: it declares its parameters and writes
``forward_step``/``backward_step``.

Notation: ``B`` rows at this step, ``H`` hidden size, ``P`` output width
(``proj_size`` if > 0 else ``H``), ``G = num_gates * H``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence


class CellType:
    """Base class of a recurrent cell's math.  Subclass it to add a cell.

    Class attributes a subclass sets:

    ``name``
        the registry name (``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ...).
    ``num_gates``
        ``G = num_gates * hidden_size`` rows in ``weight_ih``/``weight_hh``.
    ``state_names``
        names of the state tensors; ``state_names[0]`` is the output ``h``.
    ``supports_proj``
        whether ``proj_size > 0`` is allowed (LSTM only among the built-ins).
    ``torch_mode``
        the ``mode`` string PyTorch uses (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``,
        ``"RNN_RELU"``), or ``None`` for cells PyTorch lacks.
    """

    name: ClassVar[str] = ""
    num_gates: ClassVar[int] = 1
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    supports_proj: ClassVar[bool] = False
    torch_mode: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    # -- layout ---------------------------------------------------------------
    def parameter_shapes(
        self, input_size: int, hidden_size: int, proj_size: int = 0, bias: bool = True
    ) -> list[tuple[str, tuple[int, ...]]]:
        """``[(name, shape), ...]`` in PyTorch order: w_ih, w_hh, b_ih, b_hh, w_hr.

        Every cell has ``weight_ih`` (the engine's hoisted input GEMM uses it)
        and, with ``bias``, ``bias_ih``.  A subclass may append parameters of
        its own (e.g. peephole weights) after these.
        """
        g = self.num_gates * hidden_size
        out = proj_size if proj_size > 0 else hidden_size
        shapes = [("weight_ih", (g, input_size)), ("weight_hh", (g, out))]
        if bias:
            shapes += [("bias_ih", (g,)), ("bias_hh", (g,))]
        if proj_size > 0:
            shapes.append(("weight_hr", (proj_size, hidden_size)))
        return shapes

    def state_sizes(self, hidden_size: int, proj_size: int = 0) -> tuple[int, ...]:
        """Width of each state tensor: ``h`` is ``P`` wide, any other ``H``."""
        out = proj_size if proj_size > 0 else hidden_size
        return (out,) + (hidden_size,) * (len(self.state_names) - 1)

    # -- math -----------------------------------------------------------------
    def forward_step(
        self, xp, p: dict[str, Any], gi, state: Sequence[Any]
    ) -> tuple[tuple[Any, ...], Any]:
        """One time step.

        ``p``: this layer-direction's parameters by base name (``"weight_hh"``
        ...; biases absent when ``bias=False``).  ``gi``: ``(B, G)``, the input
        projection ``x_t @ weight_ih.T + bias_ih`` of this step.  ``state``: the
        previous state tensors, ``(B, width)`` each.  Returns the new state
        tuple and a cache for ``backward_step`` (anything; may be ``None`` when
        only inference is needed, but must not alias arrays that the caller
        later overwrites).
        """
        raise NotImplementedError

    def backward_step(
        self, xp, p: dict[str, Any], cache: Any, d_state: Sequence[Any], grads: dict[str, Any]
    ) -> tuple[Any, tuple[Any, ...]]:
        """Backward of ``forward_step``.

        ``d_state``: gradients of the loss w.r.t. the new state (``d_state[0]``
        already includes the gradient flowing in from the output at this step).
        Adds the gradients of the parameters the step used (everything except
        ``weight_ih``/``bias_ih``, which the engine handles) into ``grads`` in
        place, and returns ``(d_gi, d_state_prev)``.
        """
        raise NotImplementedError

    # -- presentation ---------------------------------------------------------
    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def declaration_problem(cell_type: type[CellType]) -> str | None:
    """What is wrong with a cell type's ``num_gates`` and ``state_names`` (the engine sizes every
    parameter and state by them), or ``None``.  ``CellSpec`` refuses a cell type that has a problem."""
    gates, names = cell_type.num_gates, cell_type.state_names
    if not isinstance(gates, int) or isinstance(gates, bool) or gates < 1:
        return f"num_gates must be a positive int, got {gates!r}"
    if not isinstance(names, tuple) or not names or not all(isinstance(n, str) for n in names):
        return f"state_names must be a non-empty tuple of str, got {names!r}"
    if names[0] != "h" or len(set(names)) != len(names):
        return f"state_names must start with 'h' (the output) and be unique, got {names!r}"
    return None


def sigmoid(xp, x):
    """Logistic sigmoid as ``tanh(x/2)/2 + 1/2``: never overflows (chainer's form)."""
    return xp.tanh(x * 0.5) * 0.5 + 0.5
