"""The conformance kit: checks a cell plugin runs in its own test suite.

A cell (built-in or from a plugin) conforms when it behaves like the
built-ins everywhere lstmkit can run it::

    from lstmkit.testing import check_cell

    def test_my_cell_conforms():
        check_cell("my_cell")            # a registered name, a CellSpec or a CellType subclass

:func:`check_cell` runs every check of :data:`CHECKS`, each also public:

:func:`check_spec`
    the declaration: names, gate count, parameter layout, state sizes,
    options model (unknown options refused), ``proj_size`` refused unless
    ``supports_proj``.
:func:`check_shapes`
    shapes and state handling, on every backend, float32 and float64:
    multi-layer, bidirectional, ``h_n[layer * D + direction]`` layout,
    ``hx=None`` equal to zeros, a given ``hx`` used, ``batch_first``,
    unbatched input, packed sequences of unequal lengths equal to running
    each sequence alone, dtypes kept, arguments not modified, and a loop of
    ``RecurrentCell`` steps equal to the one-layer module.
:func:`check_gradients`
    float64 central differences of a random linear loss through
    ``forward_train``: every parameter, the input and ``hx`` (non-zero),
    batch > 1, multi-layer bidirectional, packed, ``bias=False`` +
    ``batch_first``, unbatched, ``RecurrentCell``; ``backward`` repeatable
    and unaffected by later forwards (caches are not shared).
:func:`check_backends`
    every backend other than the ``numpy`` reference agrees with it,
    forward and backward, float32 and float64.
:func:`check_state_dict`
    parameter names and order (``weight_ih_l0``, ..., ``_reverse``), copies,
    ``load_state_dict`` and an ``.npz`` round trip reproduce the outputs.

A backend plugin is checked with :func:`check_backend`: every built-in cell
compared with the reference, and :class:`SampleCellType` (a cell no backend
has a kernel for) through the backend's fallback path.

A failed check raises :class:`ConformanceError` (an ``AssertionError``)
whose message names the check, the cell, the backend, the case and the
quantity, e.g. ``check_gradients: cell 'peephole', backend 'numpy', float64,
2 layers bidirectional, hx given: d_params['weight_ci_l1_reverse'] differs
from central differences: max error 3.1e-02 > allowed 1.0e-06 (rtol 1e-06 x
max(1, max|expected|))``.

:func:`registered_plugin` registers a plugin object in this process for the
duration of a ``with`` block (tests, notebooks, documentation), so a plugin's
checks can run before it is installed.
"""
from __future__ import annotations

import contextlib
import functools
import io
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .cells import CellType
from .specs import CellSpec
from .learn.gradcheck import gradcheck  # noqa: F401  (a notebook-friendly report; lives in learn/)

__all__ = [
    "CHECKS",
    "ConformanceError",
    "SampleCellType",
    "check_backend",
    "check_backends",
    "check_cell",
    "check_gradients",
    "check_shapes",
    "check_spec",
    "check_state_dict",
    "numeric_gradient",
    "registered_plugin",
]

#: The reference backend every other backend is compared with.
REFERENCE = "numpy"
#: Step of the central differences (float64).
EPS = 1e-6


class ConformanceError(AssertionError):
    """A cell failed a conformance check; the message says which, where and by how much."""


# -- registering a plugin in-process ---------------------------------------------------
@contextlib.contextmanager
def registered_plugin(plugin: Any, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` (a module or any object with ``@lstmkit.hookimpl``
    functions) in the process-wide registry for the ``with`` block; yields
    its name.

    Errors raise here instead of becoming warnings: a hook declared wrongly
    (wrong or missing argument names) or an unknown hook name
    (:class:`~lstmkit.registry.PluginError` naming the hook and the signature
    it must have), a name already registered (``PluginError`` naming both
    providers), or an exception in a ``register_*`` hook.  The plugin is unregistered on exit, also when the
    block raises.
    """
    from .registry import get_registry

    registry = get_registry()
    name = registry.register(plugin, name)
    try:
        yield name
    finally:
        registry.unregister(name)


# -- subjects ----------------------------------------------------------------------------
class _Subject:
    """The cell under test and how to build modules of it."""

    def __init__(self, cell, cell_options: dict | None):
        self.options = dict(cell_options or {})
        self.spec: CellSpec | None = None
        if isinstance(cell, str):
            from .registry import get_registry

            self.spec = get_registry().cell_spec(cell)  # unknown: lists the valid names
            self._arg = lambda: (cell, self.options or None)  # modules look the name up themselves
            instance = self.spec.create(self.options)
        elif isinstance(cell, CellSpec):
            self.spec = cell
            self._arg = lambda: (cell.create(self.options), None)
            instance = cell.create(self.options)
        elif isinstance(cell, type) and issubclass(cell, CellType):
            self._arg = lambda: (cell(**self.options), None)
            instance = cell(**self.options)
        elif isinstance(cell, CellType):
            if self.options:
                raise ValueError("cell_options are given to the constructor when passing a CellType instance")
            self._arg = lambda: (cell, None)
            instance = cell
        else:
            raise TypeError(
                "the conformance checks take a registered cell name, a CellSpec, or a CellType subclass or "
                f"instance; got {type(cell).__name__}"
            )
        self.cell = instance
        self.cell_type = type(instance)
        self.name = self.cell_type.name
        self.label = f"cell {self.name!r}" + (f" with cell_options={self.options}" if self.options else "")
        self.where = ""

    def recurrent(self, input_size, hidden_size, **kwargs):
        from .nn import Recurrent

        cell, options = self._arg()
        return Recurrent(cell, input_size, hidden_size, cell_options=options, **kwargs)

    def recurrent_cell(self, input_size, hidden_size, **kwargs):
        from .nn import RecurrentCell

        cell, options = self._arg()
        return RecurrentCell(cell, input_size, hidden_size, cell_options=options, **kwargs)

    @property
    def num_states(self) -> int:
        return len(self.cell_type.state_names)

    def at(self, where: str) -> str:
        """Record the case being run (named if it raises something other than a ConformanceError)."""
        self.where = where
        return where

    def fail(self, check: str, where: str, message: str) -> None:
        raise ConformanceError(f"{check}: {self.label}{', ' + where if where else ''}: {message}")


def _conformance_check(function):
    """Run a check on a :class:`_Subject`; an unexpected exception becomes a
    :class:`ConformanceError` naming the check, the cell and the case."""

    @functools.wraps(function)
    def run(cell, *, cell_options: dict | None = None, **kwargs):
        s = _subject(cell, cell_options)
        s.where = ""
        if kwargs.get("backends") is not None:
            _backend_names(kwargs["backends"])  # a wrong name is the caller's error, not the cell's
        try:
            function(s, **kwargs)
        except ConformanceError:
            raise
        except Exception as exc:
            where = f", {s.where}" if s.where else ""
            raise ConformanceError(
                f"{function.__name__}: {s.label}{where}: raised {type(exc).__name__}: {exc}"
            ) from exc

    return run


def _subject(cell, cell_options) -> _Subject:
    if isinstance(cell, _Subject):
        return cell
    return _Subject(cell, cell_options)


def _backend_names(backends: Sequence[str] | str | None) -> list[str]:
    """``None``: every available backend (the reference included); else the given ones, checked."""
    from .registry import available_backends, get_backend

    if backends is None:
        names = available_backends()
    else:
        names = [backends] if isinstance(backends, str) else list(backends)
        for name in names:
            get_backend(name)  # an unknown or unavailable backend raises, naming the reason
    return names


# -- array helpers -------------------------------------------------------------------------
def _host(array) -> np.ndarray:
    """A NumPy view or copy of a NumPy or device (CuPy) array."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get") and hasattr(array, "__cuda_array_interface__"):
        return array.get()
    return np.asarray(array)


def _states(state) -> list[np.ndarray]:
    """A module's state (an array, or a tuple of arrays) as a list of host arrays."""
    return [_host(s) for s in (state if isinstance(state, (tuple, list)) else (state,))]


def _structure(states: list, num_states: int):
    """The caller-facing structure of a state list: one array, or a tuple."""
    return states[0] if num_states == 1 else tuple(states)


def _data(value) -> np.ndarray:
    from .utils.rnn import PackedSequence

    return _host(value.data if isinstance(value, PackedSequence) else value)


def _max_error(actual, expected, scale_floor: float = 0.0) -> tuple[float, float]:
    """``(max |actual - expected|, max(|expected|.max(), scale_floor))``."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.size == 0:
        return 0.0, 1.0
    error = float(np.max(np.abs(actual - expected))) if np.all(np.isfinite(actual)) else float("inf")
    return error, max(float(np.max(np.abs(expected))), scale_floor)


def _compare(s: _Subject, check: str, where: str, quantity: str, actual, expected, rtol: float,
             against: str) -> None:
    """Fail unless ``max|actual - expected| <= rtol * max(1, max|expected|)`` (shapes equal)."""
    actual, expected = _host(actual), _host(expected)
    if actual.shape != expected.shape:
        s.fail(check, where, f"{quantity} has shape {actual.shape}, {against} {expected.shape}")
    error, scale = _max_error(actual, expected, scale_floor=1.0)
    if not error <= rtol * scale:
        s.fail(check, where, f"{quantity} differs from {against}: max error {error:.1e} > allowed "
                             f"{rtol * scale:.1e} (rtol {rtol:.0e} x max(1, max|expected|))")


def numeric_gradient(f: Callable[[], float], array: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences of the scalar ``f()`` w.r.t. every element of ``array``.

    ``array`` is perturbed in place (and restored): pass the very array ``f``
    reads (a parameter of the module, the input, ``hx``).  Use float64.
    """
    grad = np.zeros(array.shape, dtype=np.float64)
    for index in np.ndindex(array.shape):
        old = array[index]
        array[index] = old + eps
        plus = f()
        array[index] = old - eps
        minus = f()
        array[index] = old
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def _random_state(s: _Subject, module, batch: int, rng, unbatched: bool = False) -> list[np.ndarray]:
    shapes = module._state_shapes(batch)
    states = [rng.standard_normal(shape).astype(module.dtype) * 0.5 for shape in shapes]
    return [st[:, 0, :].copy() for st in states] if unbatched else states


def _case_label(dtype, **kwargs) -> str:
    parts = [np.dtype(dtype).name]
    layers = kwargs.get("num_layers", 1)
    parts.append(f"{layers} layer{'s' if layers > 1 else ''}" + (" bidirectional" if kwargs.get("bidirectional") else ""))
    for key in ("proj_size", "bias", "batch_first"):
        if key in kwargs:
            parts.append(f"{key}={kwargs[key]}")
    return ", ".join(parts)


def _module_configs(s: _Subject) -> list[dict]:
    configs = [dict(num_layers=2, bidirectional=True), dict(num_layers=1, bias=False)]
    if s.cell_type.supports_proj:
        configs.append(dict(num_layers=2, bidirectional=True, proj_size=2))
    return configs


# -- the checks -----------------------------------------------------------------------------
@_conformance_check
def check_spec(cell, *, cell_options: dict | None = None, input_size: int = 3, hidden_size: int = 4) -> None:
    """The cell's declaration: ``name``, ``num_gates``, ``state_names``,
    ``parameter_shapes`` (``weight_ih (G, I)`` first, ``bias_ih (G,)``
    present exactly when ``bias``, unique names, integer shapes),
    ``state_sizes``, the options model, and ``proj_size`` handling."""
    check = "check_spec"
    s = _subject(cell, cell_options)
    ct = s.cell_type
    if not isinstance(ct.name, str) or not ct.name:
        s.fail(check, "", f"{ct.__name__}.name must be a non-empty string, got {ct.name!r}")
    if s.spec is not None and s.spec.name != ct.name:
        s.fail(check, "", f"CellSpec name {s.spec.name!r} differs from {ct.__name__}.name {ct.name!r}")
    if not isinstance(ct.num_gates, int) or isinstance(ct.num_gates, bool) or ct.num_gates < 1:
        s.fail(check, "", f"num_gates must be a positive int, got {ct.num_gates!r}")
    names = ct.state_names
    if not isinstance(names, tuple) or not names or not all(isinstance(n, str) for n in names):
        s.fail(check, "", f"state_names must be a non-empty tuple of str, got {names!r}")
    if names[0] != "h" or len(set(names)) != len(names):
        s.fail(check, "", f"state_names must start with 'h' (the output) and be unique, got {names!r}")
    if not isinstance(ct.description, str):
        s.fail(check, "", f"description must be a string, got {ct.description!r}")

    g = ct.num_gates * hidden_size
    for bias in (True, False):
        where = s.at(f"parameter_shapes({input_size}, {hidden_size}, 0, bias={bias})")
        shapes = s.cell.parameter_shapes(input_size, hidden_size, 0, bias)
        if not isinstance(shapes, list) or not all(
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in shapes
        ):
            s.fail(check, where, f"must return a list of (name, shape) tuples, got {shapes!r}")
        pnames = [n for n, _ in shapes]
        if len(set(pnames)) != len(pnames):
            s.fail(check, where, f"parameter names must be unique, got {pnames}")
        for pname, shape in shapes:
            if not pname.isidentifier():
                s.fail(check, where, f"parameter name {pname!r} is not an identifier")
            if not isinstance(shape, tuple) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape
            ):
                s.fail(check, where, f"shape of {pname!r} must be a tuple of positive ints, got {shape!r}")
        if not shapes or shapes[0] != ("weight_ih", (g, input_size)):
            s.fail(check, where, f"the first parameter must be ('weight_ih', {(g, input_size)}) "
                                 f"(num_gates * hidden_size rows: the engine's input GEMM), got {shapes[:1]}")
        table = dict(shapes)
        if bias and table.get("bias_ih") != (g,):
            s.fail(check, where, f"with bias, 'bias_ih' of shape {(g,)} must be a parameter, got {table.get('bias_ih')}")
        if not bias and any(n.startswith("bias") for n in pnames):
            s.fail(check, where, f"with bias=False there must be no bias parameters, got {pnames}")

    sizes = s.cell.state_sizes(hidden_size)
    if len(tuple(sizes)) != len(names) or tuple(sizes)[0] != hidden_size:
        s.fail(check, f"state_sizes({hidden_size})", f"must give one width per state {names} "
                                                      f"starting with hidden_size {hidden_size}, got {sizes!r}")

    spec = s.spec
    if spec is not None:
        try:
            spec.create({"__not_an_option__": 1})
        except ValueError:  # pydantic's ValidationError is a ValueError
            pass
        else:
            s.fail(check, "options", "an unknown option was accepted; the options model must refuse "
                                     "unknown keys (pydantic: model_config = ConfigDict(extra='forbid'))")
        if spec.options_model is not None:
            try:
                spec.create(s.options)
            except Exception as exc:  # noqa: BLE001
                s.fail(check, "options", f"the options {s.options} are refused: {exc}")

    if not ct.supports_proj:
        try:
            s.recurrent(input_size, hidden_size, proj_size=1, backend=REFERENCE)
        except ValueError:
            pass
        else:
            s.fail(check, "proj_size=1", "supports_proj is False but the module accepted proj_size > 0")


@_conformance_check
def check_shapes(cell, *, cell_options: dict | None = None, backends: Sequence[str] | None = None,
                 input_size: int = 3, hidden_size: int = 4) -> None:
    """Shapes and state handling, on each backend (default: every available one), float32 and float64.

    For each module configuration (2 layers bidirectional; 1 layer without
    bias; 2 layers bidirectional with ``proj_size`` when supported):
    ``output (T, B, D*P)``, state ``(L*D, B, width)`` per state tensor (a
    tuple when the cell has several), the module's dtype; ``hx=None`` equal
    to zeros; a non-zero ``hx`` changes the output;
    ``h_n[(L-1)*D] == output[-1, :, :P]`` and ``h_n[(L-1)*D + 1] ==
    output[0, :, P:]``; ``batch_first`` transposes the output only;
    unbatched input equals a batch of one; a ``PackedSequence`` of unequal
    lengths (``enforce_sorted=False``) equals running each sequence alone;
    the input and ``hx`` are not modified; ``RecurrentCell`` steps equal the
    one-layer module with the same weights.
    """
    from .utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    check = "check_shapes"
    s = _subject(cell, cell_options)
    n = s.num_states
    steps, batch, lengths = 5, 3, [5, 2, 4]
    for backend in _backend_names(backends):
        for dtype in (np.float32, np.float64):
            tol = 1e-5 if dtype == np.float32 else 1e-12
            for cfg in _module_configs(s):
                rng = np.random.default_rng(0)
                where = s.at(f"backend {backend!r}, {_case_label(dtype, **cfg)}")
                m = s.recurrent(input_size, hidden_size, backend=backend, dtype=dtype, seed=0, **cfg)
                d = 2 if cfg.get("bidirectional") else 1
                layers = cfg["num_layers"]
                p = cfg.get("proj_size") or hidden_size
                widths = list(s.cell.state_sizes(hidden_size, cfg.get("proj_size", 0)))
                x = rng.standard_normal((steps, batch, input_size)).astype(dtype)
                x_copy = x.copy()

                out, state = m(x)
                if n > 1 and not (isinstance(state, tuple) and len(state) == n):
                    s.fail(check, where, f"the state should be a tuple of {n} arrays {s.cell_type.state_names}, "
                                         f"got {type(state).__name__}")
                if n == 1 and isinstance(state, (tuple, list)):
                    s.fail(check, where, f"a cell with one state tensor returns it as one array, got a {type(state).__name__}")
                out = _host(out)
                states = _states(state)
                if out.shape != (steps, batch, d * p):
                    s.fail(check, where, f"output has shape {out.shape}, expected (T, B, D*P) = {(steps, batch, d * p)}")
                for k, (st, w) in enumerate(zip(states, widths)):
                    name = s.cell_type.state_names[k]
                    if st.shape != (layers * d, batch, w):
                        s.fail(check, where, f"{name}_n has shape {st.shape}, expected (L*D, B, width) = "
                                             f"{(layers * d, batch, w)}")
                for what, arr in [("output", out)] + [(f"{nm}_n", st) for nm, st in zip(s.cell_type.state_names, states)]:
                    if arr.dtype != np.dtype(dtype):
                        s.fail(check, where, f"{what} has dtype {arr.dtype}, expected the module's {np.dtype(dtype)} "
                                             "(a step must compute in the dtype of its inputs)")
                    if not np.all(np.isfinite(arr)):
                        s.fail(check, where, f"{what} has non-finite values")
                if not np.array_equal(x, x_copy):
                    s.fail(check, where, "the input was modified")

                # h_n layout: the last layer's final states are the output's ends.
                last = (layers - 1) * d
                _compare(s, check, where, f"h_n[{last}] (last layer, forward)", states[0][last], out[-1, :, :p], tol,
                         "output[-1, :, :P]")
                if d == 2:
                    _compare(s, check, where, f"h_n[{last + 1}] (last layer, reverse)", states[0][last + 1],
                             out[0, :, p:], tol, "output[0, :, P:]")

                # hx=None is zeros; a given hx is used and left alone.
                s.at(where + ", hx given")
                zeros = [np.zeros_like(st) for st in states]
                out0, state0 = m(x, _structure(zeros, n))
                _compare(s, check, where, "output with hx=zeros", out0, out, tol, "output with hx=None")
                hx = _random_state(s, m, batch, rng)
                hx_copy = [h.copy() for h in hx]
                out_h, state_h = m(x, _structure(hx, n))
                out_h, states_h = _host(out_h), _states(state_h)
                if any(not np.array_equal(a, b) for a, b in zip(hx, hx_copy)):
                    s.fail(check, where, "hx was modified")
                if np.allclose(out_h, out, rtol=0, atol=1e-7):
                    s.fail(check, where, "a non-zero hx did not change the output (is the initial state used?)")

                # batch_first: the output is transposed, the state is not.
                s.at(where + ", batch_first=True")
                m_bf = s.recurrent(input_size, hidden_size, backend=backend, dtype=dtype, batch_first=True, **cfg)
                m_bf.load_state_dict(m.state_dict())
                out_bf, state_bf = m_bf(np.ascontiguousarray(x.transpose(1, 0, 2)), _structure(hx, n))
                _compare(s, check, where, "batch_first output transposed", _host(out_bf).transpose(1, 0, 2), out_h,
                         tol, "the time-major output")
                for k, (a, b) in enumerate(zip(_states(state_bf), states_h)):
                    _compare(s, check, where, f"batch_first {s.cell_type.state_names[k]}_n", a, b, tol,
                             "the time-major state (batch_first never changes the state layout)")

                # unbatched input is a batch of one.
                s.at(where + ", unbatched")
                out_u, state_u = m(x[:, 0, :], _structure([h[:, 0, :] for h in hx], n))
                out_1, state_1 = m(x[:, :1, :], _structure([h[:, :1, :] for h in hx], n))
                out_u = _host(out_u)
                if out_u.shape != (steps, d * p):
                    s.fail(check, where, f"unbatched output has shape {out_u.shape}, expected (T, D*P) = {(steps, d * p)}")
                _compare(s, check, where, "unbatched output", out_u, _host(out_1)[:, 0, :], tol, "a batch of one")
                for k, (a, b) in enumerate(zip(_states(state_u), _states(state_1))):
                    if a.shape != (layers * d, widths[k]):
                        s.fail(check, where, f"unbatched {s.cell_type.state_names[k]}_n has shape {a.shape}, "
                                             f"expected (L*D, width) = {(layers * d, widths[k])}")
                    _compare(s, check, where, f"unbatched {s.cell_type.state_names[k]}_n", a, b[:, 0, :], tol,
                             "a batch of one")

                # packed, unequal lengths, unsorted: each sequence as if alone.
                s.at(where + f", packed lengths {lengths}")
                packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
                out_p, state_p = m(packed, _structure(hx, n))
                if not isinstance(out_p, PackedSequence):
                    s.fail(check, where, f"packed input gave a {type(out_p).__name__} output, expected a PackedSequence")
                padded, out_lengths = pad_packed_sequence(out_p._replace(data=_host(out_p.data)))
                states_p = _states(state_p)
                for b, length in enumerate(lengths):
                    alone_out, alone_state = m(x[:length, b : b + 1], _structure([h[:, b : b + 1] for h in hx], n))
                    case = f"{where}, packed lengths {lengths}, sequence {b}"
                    _compare(s, check, case, "output", padded[:length, b], _host(alone_out)[:, 0], tol,
                             "the sequence run alone")
                    if np.any(padded[length:, b] != 0):
                        s.fail(check, case, "padded output past the sequence's length is not zero")
                    for k, (a, alone) in enumerate(zip(states_p, _states(alone_state))):
                        _compare(s, check, case, f"{s.cell_type.state_names[k]}_n", a[:, b], alone[:, 0], tol,
                                 "the sequence run alone")
                if list(out_lengths) != lengths:
                    s.fail(check, where, f"packed output lengths {list(out_lengths)} != input lengths {lengths}")

            # RecurrentCell: one step; a loop of steps is the one-layer module.
            where = s.at(f"backend {backend!r}, {np.dtype(dtype).name}, RecurrentCell")
            rng = np.random.default_rng(1)
            c = s.recurrent_cell(input_size, hidden_size, backend=backend, dtype=dtype, seed=0)
            m1 = s.recurrent(input_size, hidden_size, backend=backend, dtype=dtype)
            m1.load_state_dict({name + "_l0": value for name, value in c.state_dict().items()})
            x = rng.standard_normal((steps, batch, input_size)).astype(dtype)
            hx = _random_state(s, m1, batch, rng)
            out_m, state_m = m1(x, _structure(hx, n))
            step_state = [h[0] for h in hx]
            for t in range(steps):
                result = c(x[t], _structure(step_state, n))
                step_state = _states(result)
                if n > 1 and not (isinstance(result, tuple) and len(result) == n):
                    s.fail(check, where, f"a step should return a tuple of {n} arrays, got {type(result).__name__}")
                for k, st in enumerate(step_state):
                    if st.shape != (batch, s.cell.state_sizes(hidden_size)[k]) or st.dtype != np.dtype(dtype):
                        s.fail(check, where, f"step state {k} has shape {st.shape} dtype {st.dtype}, expected "
                                             f"{(batch, s.cell.state_sizes(hidden_size)[k])} {np.dtype(dtype)}")
                _compare(s, check, f"{where}, step {t}", "h", step_state[0], _host(out_m)[t], tol,
                         "the one-layer module's output[t]")
            for k, (a, b) in enumerate(zip(step_state, _states(state_m))):
                _compare(s, check, where, f"final {s.cell_type.state_names[k]}", a, b[0], tol,
                         "the one-layer module's final state")
            zero_step = _states(c(x[0]))
            _compare(s, check, where, "step with hx=None", zero_step[0],
                     _states(c(x[0], _structure([np.zeros((batch, w), dtype) for w in s.cell.state_sizes(hidden_size)], n)))[0],
                     tol, "a step with zero hx")
            unbatched = _states(c(x[0, 0], _structure([h[0, 0] for h in hx], n)))
            batched = _states(c(x[0, :1], _structure([h[0, :1] for h in hx], n)))
            for k, (a, b) in enumerate(zip(unbatched, batched)):
                if a.shape != (s.cell.state_sizes(hidden_size)[k],):
                    s.fail(check, where, f"unbatched step state {k} has shape {a.shape}, expected "
                                         f"{(s.cell.state_sizes(hidden_size)[k],)}")
                _compare(s, check, where, f"unbatched step state {k}", a, b[0], tol, "a batch of one")


def _linear_loss(rng, out, state):
    """Random weights ``w`` of the loss ``sum(w_out * out) + sum(w_k * state_k)``."""
    return rng.standard_normal(_data(out).shape), [rng.standard_normal(st.shape) for st in _states(state)]


def _loss_value(out, state, w_out, w_state) -> float:
    return float((_data(out) * w_out).sum() + sum((st * w).sum() for st, w in zip(_states(state), w_state)))


@_conformance_check
def check_gradients(cell, *, cell_options: dict | None = None, backends: Sequence[str] | None = None,
                    input_size: int = 3, hidden_size: int = 3, tolerance: float = 1e-6) -> None:
    """Float64 central differences vs ``forward_train``'s ``backward`` (default: the reference backend).

    The loss is a random linear function of the output and the final state,
    so every gradient path is exercised; each element of every parameter, of
    the input and of a non-zero ``hx`` is perturbed by ``±EPS``.  Cases: 2
    layers bidirectional with ``hx`` (batch 2, 3 steps); with ``proj_size``
    when supported; packed unequal lengths, unsorted; ``bias=False`` with
    ``batch_first``; unbatched with ``hx=None``; one ``RecurrentCell`` step.
    Also: ``forward_train`` returns what ``forward`` returns, ``backward`` is
    repeatable, and a later ``forward_train`` does not change an earlier
    ``backward`` (caches must not be shared or overwritten).

    Pass ``backends`` to check other backends too (each is also compared
    with the reference by :func:`check_backends`).
    """
    from .utils.rnn import pack_padded_sequence

    check = "check_gradients"
    s = _subject(cell, cell_options)
    n = s.num_states
    names = [REFERENCE] if backends is None else _backend_names(backends)
    cases = [dict(num_layers=2, bidirectional=True)]
    if s.cell_type.supports_proj:
        cases.append(dict(num_layers=1, bidirectional=True, proj_size=2))
    cases.append(dict(num_layers=1, bidirectional=True, packed=True))
    cases.append(dict(num_layers=1, bias=False, batch_first=True))
    cases.append(dict(num_layers=2, unbatched=True))
    for backend in names:
        for case in cases:
            cfg = dict(case)
            packed, unbatched = cfg.pop("packed", False), cfg.pop("unbatched", False)
            where = s.at(f"backend {backend!r}, {_case_label(np.float64, **cfg)}")
            rng = np.random.default_rng(2)
            m = s.recurrent(input_size, hidden_size, backend=backend, dtype=np.float64, seed=0, **cfg)
            batch, steps = 2, 3
            if unbatched:
                where = s.at(where + ", unbatched, hx=None")
                x = rng.standard_normal((steps, input_size))
                hx = None
                run_input = lambda: x  # noqa: E731
            elif packed:
                lengths = [3, 1, 2]
                where = s.at(where + f", packed lengths {lengths}, hx given")
                x = rng.standard_normal((steps, len(lengths), input_size))
                data = pack_padded_sequence(x, lengths, enforce_sorted=False)
                x = data.data  # perturb the packed rows themselves
                hx = _random_state(s, m, len(lengths), rng)
                run_input = lambda: data  # noqa: E731
            else:
                where = s.at(where + ", hx given")
                shape = (batch, steps, input_size) if cfg.get("batch_first") else (steps, batch, input_size)
                x = rng.standard_normal(shape)
                hx = _random_state(s, m, batch, rng)
                run_input = lambda: x  # noqa: E731
            hx_arg = None if hx is None else _structure(hx, n)

            out, state, backward = m.forward_train(run_input(), hx_arg)
            out_f, state_f = m(run_input(), hx_arg)
            _compare(s, check, where, "forward_train output", _data(out), _data(out_f), 1e-12, "forward's output")
            for k, (a, b) in enumerate(zip(_states(state), _states(state_f))):
                _compare(s, check, where, f"forward_train state {k}", a, b, 1e-12, "forward's state")
            w_out, w_state = _linear_loss(rng, out, state)
            d_state = _structure(w_state, n)
            d_x, d_hx, d_params = backward(w_out, d_state)
            d_x = _data(d_x)

            def loss():
                o, st = m(run_input(), hx_arg)
                return _loss_value(o, st, w_out, w_state)

            _compare(s, check, where, "d_input", d_x, numeric_gradient(loss, x), tolerance, "central differences")
            if hx is None:
                for k, (d, st) in enumerate(zip(_states(d_hx), _states(state))):
                    if d.shape != st.shape:
                        s.fail(check, where, f"d_hx[{k}] has shape {d.shape} with hx=None, expected {st.shape}")
            else:
                for k, (d, h) in enumerate(zip(_states(d_hx), hx)):
                    _compare(s, check, where, f"d_hx[{k}] ({s.cell_type.state_names[k]}_0)", d,
                             numeric_gradient(loss, h), tolerance, "central differences")
            if list(d_params) != list(m.state_dict()):
                s.fail(check, where, f"d_params keys {list(d_params)} differ from state_dict keys {list(m.state_dict())}")
            for pname, value in m.named_parameters():
                _compare(s, check, where, f"d_params[{pname!r}]", d_params[pname], numeric_gradient(loss, value),
                         tolerance, "central differences")

            # backward is repeatable and independent of later forwards.
            again = backward(w_out, d_state)
            other_x = rng.standard_normal(_data(run_input()).shape) if not packed else None
            if other_x is not None:
                m.forward_train(other_x.reshape(x.shape), None if hx is None else _structure([h * 2 for h in hx], n))
            later = backward(w_out, d_state)
            for label, result in (("a second backward", again), ("backward after another forward_train", later)):
                _compare(s, check, where, f"{label}: d_input", _data(result[0]), d_x, 1e-12, "the first backward")
                for pname in d_params:
                    _compare(s, check, where, f"{label}: d_params[{pname!r}]", result[2][pname], d_params[pname],
                             1e-12, "the first backward (does the step's cache share or reuse arrays?)")

        # One RecurrentCell step.
        where = s.at(f"backend {backend!r}, float64, RecurrentCell, batch 2, hx given")
        rng = np.random.default_rng(3)
        c = s.recurrent_cell(input_size, hidden_size, backend=backend, dtype=np.float64, seed=0)
        x = rng.standard_normal((2, input_size))
        hx = [rng.standard_normal((2, w)) * 0.5 for w in s.cell.state_sizes(hidden_size)]
        result, backward = c.forward_train(x, _structure(hx, n))
        ws = [rng.standard_normal(r.shape) for r in _states(result)]

        def cell_loss():
            r = c(x, _structure(hx, n))
            return float(sum((a * w).sum() for a, w in zip(_states(r), ws)))

        d_x, d_hx, d_params = backward(_structure(ws, n))
        _compare(s, check, where, "d_input", d_x, numeric_gradient(cell_loss, x), tolerance, "central differences")
        for k, (d, h) in enumerate(zip(_states(d_hx), hx)):
            _compare(s, check, where, f"d_hx[{k}]", d, numeric_gradient(cell_loss, h), tolerance, "central differences")
        for pname, value in c.named_parameters():
            _compare(s, check, where, f"d_params[{pname!r}]", d_params[pname], numeric_gradient(cell_loss, value),
                     tolerance, "central differences")


@_conformance_check
def check_backends(cell, *, cell_options: dict | None = None, backends: Sequence[str] | None = None,
                   input_size: int = 3, hidden_size: int = 4, rtol32: float = 1e-4, rtol64: float = 1e-10) -> None:
    """Every backend (default: every available one) agrees with the ``numpy`` reference.

    Forward (output, state) and backward (``d_input``, ``d_hx``, every
    ``d_params``) for 2 layers bidirectional with ``hx``, packed unequal
    lengths, unbatched, and a ``RecurrentCell`` step; float32 within
    ``rtol32`` and float64 within ``rtol64`` of ``max(1, max|reference|)``.
    """
    from .utils.rnn import pack_padded_sequence

    check = "check_backends"
    s = _subject(cell, cell_options)
    n = s.num_states
    others = [b for b in _backend_names(backends) if b != REFERENCE]
    cases = [("2 layers bidirectional, hx given", dict(num_layers=2, bidirectional=True), "dense"),
             ("1 layer bidirectional, packed lengths [6, 2, 5]", dict(bidirectional=True), "packed"),
             ("2 layers, unbatched, hx=None", dict(num_layers=2), "unbatched")]
    if s.cell_type.supports_proj:
        cases.append(("2 layers bidirectional, proj_size=2, hx given",
                      dict(num_layers=2, bidirectional=True, proj_size=2), "dense"))
    for dtype, rtol in ((np.float32, rtol32), (np.float64, rtol64)):
        for label, cfg, kind in cases:
            rng = np.random.default_rng(4)
            steps, batch = 6, 3
            x = rng.standard_normal((steps, batch, input_size)).astype(dtype)
            ref = s.recurrent(input_size, hidden_size, backend=REFERENCE, dtype=dtype, seed=0, **cfg)
            hx = _random_state(s, ref, batch, rng)
            if kind == "packed":
                run_input, hx_arg = pack_padded_sequence(x, [6, 2, 5], enforce_sorted=False), _structure(hx, n)
            elif kind == "unbatched":
                run_input, hx_arg = x[:, 0], None
            else:
                run_input, hx_arg = x, _structure(hx, n)
            out_r, state_r, backward_r = ref.forward_train(run_input, hx_arg)
            w_out, w_state = _linear_loss(rng, out_r, state_r)
            w_out, w_state = w_out.astype(dtype), [w.astype(dtype) for w in w_state]
            grads_r = backward_r(w_out, _structure(w_state, n))
            for backend in others:
                where = s.at(f"backend {backend!r}, {np.dtype(dtype).name}, {label}")
                m = s.recurrent(input_size, hidden_size, backend=backend, dtype=dtype, **cfg)
                m.load_state_dict(ref.state_dict())
                out, state, backward = m.forward_train(run_input, hx_arg)
                against = f"the {REFERENCE!r} reference"
                _compare(s, check, where, "output", _data(out), _data(out_r), rtol, against)
                for k, (a, b) in enumerate(zip(_states(state), _states(state_r))):
                    _compare(s, check, where, f"{s.cell_type.state_names[k]}_n", a, b, rtol, against)
                out_f, _ = m(run_input, hx_arg)
                _compare(s, check, where, "forward output", _data(out_f), _data(out_r), rtol, against)
                d_x, d_hx, d_params = backward(w_out, _structure(w_state, n))
                _compare(s, check, where, "d_input", _data(d_x), _data(grads_r[0]), rtol, against)
                for k, (a, b) in enumerate(zip(_states(d_hx), _states(grads_r[1]))):
                    _compare(s, check, where, f"d_hx[{k}]", a, b, rtol, against)
                for pname, value in grads_r[2].items():
                    _compare(s, check, where, f"d_params[{pname!r}]", d_params[pname], value, rtol, against)

        # RecurrentCell: one step, forward and backward.
        rng = np.random.default_rng(5)
        ref_c = s.recurrent_cell(input_size, hidden_size, backend=REFERENCE, dtype=dtype, seed=0)
        x = rng.standard_normal((3, input_size)).astype(dtype)
        hx = [rng.standard_normal((3, w)).astype(dtype) for w in s.cell.state_sizes(hidden_size)]
        result_r, backward_r = ref_c.forward_train(x, _structure(hx, n))
        ws = [rng.standard_normal(r.shape).astype(dtype) for r in _states(result_r)]
        grads_r = backward_r(_structure(ws, n))
        for backend in others:
            where = s.at(f"backend {backend!r}, {np.dtype(dtype).name}, RecurrentCell")
            c = s.recurrent_cell(input_size, hidden_size, backend=backend, dtype=dtype)
            c.load_state_dict(ref_c.state_dict())
            against = f"the {REFERENCE!r} reference"
            for k, (a, b) in enumerate(zip(_states(c(x, _structure(hx, n))), _states(result_r))):
                _compare(s, check, where, f"step state {k}", a, b, rtol, against)
            result, backward = c.forward_train(x, _structure(hx, n))
            d_x, d_hx, d_params = backward(_structure(ws, n))
            _compare(s, check, where, "d_input", d_x, grads_r[0], rtol, against)
            for k, (a, b) in enumerate(zip(_states(d_hx), _states(grads_r[1]))):
                _compare(s, check, where, f"d_hx[{k}]", a, b, rtol, against)
            for pname, value in grads_r[2].items():
                _compare(s, check, where, f"d_params[{pname!r}]", d_params[pname], value, rtol, against)


@_conformance_check
def check_state_dict(cell, *, cell_options: dict | None = None, backends: Sequence[str] | None = None,
                     input_size: int = 3, hidden_size: int = 4) -> None:
    """State dicts: PyTorch's names and order, copies, and round trips.

    Keys are ``<name>_l<layer>`` (+ ``_reverse``) for each ``name`` of
    ``parameter_shapes``, layer by layer, forward direction first, with
    those shapes; ``RecurrentCell`` keys are the names themselves.
    ``state_dict()`` returns copies; ``load_state_dict`` into a differently
    seeded module and a ``numpy.savez``/``numpy.load`` round trip
    (``allow_pickle=False``) reproduce the outputs exactly; a missing key is
    refused under ``strict``.  Runs on the reference backend unless
    ``backends`` is given.
    """
    check = "check_state_dict"
    s = _subject(cell, cell_options)
    n = s.num_states
    names = [REFERENCE] if backends is None else _backend_names(backends)
    for backend in names:
        for cfg in _module_configs(s):
            where = s.at(f"backend {backend!r}, {_case_label(np.float32, **cfg)}")
            m = s.recurrent(input_size, hidden_size, backend=backend, seed=0, **cfg)
            d = 2 if cfg.get("bidirectional") else 1
            out_w = cfg.get("proj_size") or hidden_size
            expected = []
            for layer in range(cfg["num_layers"]):
                layer_in = input_size if layer == 0 else d * out_w
                for direction in range(d):
                    suffix = f"_l{layer}" + ("_reverse" if direction else "")
                    expected += [(name + suffix, tuple(shape)) for name, shape in
                                 s.cell.parameter_shapes(layer_in, hidden_size, cfg.get("proj_size", 0),
                                                         cfg.get("bias", True))]
            sd = m.state_dict()
            got = [(k, v.shape) for k, v in sd.items()]
            if got != expected:
                s.fail(check, where, f"state_dict keys and shapes {got} differ from the expected {expected}")
            first = next(iter(sd))
            sd[first][...] = 123.0
            if np.any(getattr(m, first) == 123.0):
                s.fail(check, where, "state_dict() returned the parameters themselves, not copies")

            rng = np.random.default_rng(6)
            x = rng.standard_normal((4, 2, input_size)).astype(np.float32)
            hx = _structure(_random_state(s, m, 2, rng), n)
            out, state = m(x, hx)
            other = s.recurrent(input_size, hidden_size, backend=backend, seed=1, **cfg)
            other.load_state_dict(m.state_dict())
            buffer = io.BytesIO()
            np.savez(buffer, **m.state_dict())
            buffer.seek(0)
            with np.load(buffer, allow_pickle=False) as saved:
                from_file = s.recurrent(input_size, hidden_size, backend=backend, seed=2, **cfg)
                from_file.load_state_dict({k: saved[k] for k in saved.files})
            for label, module in (("load_state_dict", other), (".npz round trip", from_file)):
                out2, state2 = module(x, hx)
                if not np.array_equal(_host(out2), _host(out)) or not all(
                    np.array_equal(a, b) for a, b in zip(_states(state2), _states(state))
                ):
                    s.fail(check, where, f"after {label} the outputs differ from the original module's")
            missing = dict(m.state_dict())
            dropped = list(missing)[-1]
            del missing[dropped]
            try:
                other.load_state_dict(missing)
            except RuntimeError as exc:
                if dropped not in str(exc):
                    s.fail(check, where, f"the error for a missing key does not name it ({dropped!r}): {exc}")
            else:
                s.fail(check, where, f"load_state_dict accepted a state dict without {dropped!r}")

        where = s.at(f"backend {backend!r}, RecurrentCell")
        c = s.recurrent_cell(input_size, hidden_size, backend=backend, seed=0)
        expected = [(name, tuple(shape)) for name, shape in s.cell.parameter_shapes(input_size, hidden_size, 0, True)]
        got = [(k, v.shape) for k, v in c.state_dict().items()]
        if got != expected:
            s.fail(check, where, f"state_dict keys and shapes {got} differ from parameter_shapes {expected}")
        other = s.recurrent_cell(input_size, hidden_size, backend=backend, seed=1)
        other.load_state_dict(c.state_dict())
        x = np.random.default_rng(7).standard_normal((2, input_size)).astype(np.float32)
        if not all(np.array_equal(a, b) for a, b in zip(_states(other(x)), _states(c(x)))):
            s.fail(check, where, "after load_state_dict the step's result differs from the original cell's")


#: Every check, in the order :func:`check_cell` runs them.
CHECKS: tuple[Callable[..., None], ...] = (check_spec, check_shapes, check_gradients, check_backends, check_state_dict)


def check_cell(cell, *, cell_options: dict | None = None, backends: Sequence[str] | None = None) -> list[str]:
    """Run every conformance check (:data:`CHECKS`) on ``cell``; returns the names of the checks passed.

    ``cell``: a registered name (``"peephole"``), a :class:`~lstmkit.specs.CellSpec`,
    or a :class:`~lstmkit.cells.CellType` subclass (or instance).
    ``cell_options``: the options the cell is built with (validated by its
    options model).  ``backends``: the backends to run and compare (default:
    every available one); the ``numpy`` reference is always the yardstick.
    Raises :class:`ConformanceError` at the first failure.
    """
    s = _subject(cell, cell_options)
    check_spec(s)
    check_shapes(s, backends=backends)
    check_gradients(s)
    check_backends(s, backends=backends)
    check_state_dict(s)
    return [c.__name__ for c in CHECKS]


# -- backends ------------------------------------------------------------------------------
class SampleCellType(CellType):
    """A cell that is not built in, so no backend has a fused kernel for it (gates ``[z|g]``,
    states ``(h, c)``; ``gh = h_{t-1} W_hhᵀ + b_hh``)::

        z = σ(gi_z + gh_z)        g = tanh(gi_g + gh_g)
        c_t = z ⊙ c_{t-1} + (1 - z) ⊙ g        h_t = tanh(c_t)

    :func:`check_backend` runs it to test a backend's fallback to the
    cell's reference step; it is never registered.
    """

    name = "lstmkit_sample"
    num_gates = 2
    state_names = ("h", "c")
    description = "A two-state sample cell of the conformance kit (no backend has a kernel for it)."

    def forward_step(self, xp, p, gi, state):
        from .cells import sigmoid

        h_prev, c_prev = state
        hidden = c_prev.shape[1]
        pre = gi + h_prev @ p["weight_hh"].T
        if "bias_hh" in p:
            pre = pre + p["bias_hh"]
        z, g = sigmoid(xp, pre[:, :hidden]), xp.tanh(pre[:, hidden:])
        c = z * c_prev + (1 - z) * g
        h = xp.tanh(c)
        return (h, c), (h_prev, c_prev, z, g, h)

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, c_prev, z, g, h = cache
        d_c = d_state[1] + d_state[0] * (1 - h * h)
        d_pre = xp.concatenate([d_c * (c_prev - g) * z * (1 - z), d_c * (1 - z) * (1 - g * g)], axis=1)
        grads["weight_hh"] += d_pre.T @ h_prev
        if "bias_hh" in grads:
            grads["bias_hh"] += d_pre.sum(axis=0)
        return d_pre, (d_pre @ p["weight_hh"], d_c * z)


def check_backend(name: str, *, rtol32: float = 1e-4, rtol64: float = 1e-10) -> list[str]:
    """Check the backend ``name`` (a backend plugin's conformance test); returns what was checked.

    Every built-in cell: :func:`check_backends` against the ``numpy``
    reference.  :class:`SampleCellType`, which no backend has a kernel for
    (so the backend must hand it to the cell's reference step):
    :func:`check_shapes`, :func:`check_gradients` and :func:`check_backends`
    on this backend.  An unknown or unavailable backend raises
    :class:`~lstmkit.registry.LookupFailed` with the reason; a failed check,
    :class:`ConformanceError`.
    """
    from .backends.base import FUSED_CELLS

    _backend_names([name])  # unknown or unavailable: the registry's error, with the reason
    checked = []
    for cell_type in FUSED_CELLS:
        check_backends(cell_type, backends=[name], rtol32=rtol32, rtol64=rtol64)
        checked.append(cell_type.name)
    check_shapes(SampleCellType, backends=[name])
    check_gradients(SampleCellType, backends=[name])
    check_backends(SampleCellType, backends=[name], rtol32=rtol32, rtol64=rtol64)
    checked.append(f"{SampleCellType.name} (no kernel: the fallback path)")
    return checked
