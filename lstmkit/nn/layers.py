"""``Linear`` and ``Embedding``: the feed-forward pieces around a recurrent stack.

Both follow ``torch.nn`` (parameter names, shapes, initialisation) and, like
the recurrent modules, offer ``forward_train(x) -> (y, backward)`` for
explicit backpropagation.
"""
from __future__ import annotations

import numpy as np

from . import _checks as checks
from .module import Module, ParameterGuard, as_float_dtype, as_generator


class Linear(Module):
    """PyTorch's ``nn.Linear``: ``y = x Wᵀ + b``.

    ``x`` is ``(*, in_features)``, ``y`` is ``(*, out_features)``; ``weight``
    is ``(out_features, in_features)``, ``bias`` ``(out_features,)`` (absent
    when ``bias=False``).  Both are drawn from ``U(-k, k)``,
    ``k = 1/sqrt(in_features)``.  Keyword-only ``dtype`` (float32 default, or
    float64) and ``seed`` (int or ``numpy.random.Generator``).
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None):
        super().__init__()
        self.in_features = checks.check_size("in_features", in_features, allow_numpy=True)
        self.out_features = checks.check_size("out_features", out_features, allow_numpy=True)
        checks.check_bool("bias", bias)
        self.bias_enabled = bias
        self._dtype = as_float_dtype(dtype)
        self.generator = as_generator(seed)
        self._register_parameter("weight", np.empty((self.out_features, self.in_features), self._dtype))
        if bias:
            self._register_parameter("bias", np.empty(self.out_features, self._dtype))
        else:
            object.__setattr__(self, "bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw ``weight`` then ``bias`` from ``U(-1/sqrt(in_features), 1/sqrt(in_features))``."""
        self._reset_uniform(1.0 / np.sqrt(self.in_features))

    def __call__(self, x):
        return self.forward(x)

    def _check(self, x) -> np.ndarray:
        checks.check_array("Linear", "input", x)
        checks.check_dtype("Linear", "input", x, self._dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise RuntimeError(
                f"mat1 and mat2 shapes cannot be multiplied ({_rows(x)}x{x.shape[-1] if x.ndim else 0} "
                f"and {self.in_features}x{self.out_features})"
            )
        return x

    def forward(self, x):
        """``x (*, in_features) -> y (*, out_features)``."""
        x = self._check(x)
        y = x.reshape(-1, self.in_features) @ self.weight.T  # one GEMM over all leading dimensions
        if self.bias_enabled:
            y += self.bias
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def forward_train(self, x):
        """``(y, backward)``; ``backward(d_y) -> (d_x, {"weight": x̄ᵀ d_y, "bias": Σ d_y})``.

        ``d_x = d_y W`` has ``x``'s shape; sums run over every leading dimension.
        The cache holds a copy of ``x``; changing ``weight`` in place before
        ``backward`` makes it raise (see :class:`~lstmkit.nn.module.ParameterGuard`).
        """
        y = self.forward(x)
        x = np.array(x, copy=True)  # the caller may edit x before backward
        weight, guard = self.weight, ParameterGuard({"weight": self.weight})

        def backward(d_y):
            guard.check()
            d_y = np.asarray(d_y, dtype=self._dtype)
            if d_y.shape != y.shape:
                raise ValueError(f"d_y should have the output's shape {y.shape}, got {d_y.shape}")
            rows_dy = d_y.reshape(-1, self.out_features)
            grads = {"weight": rows_dy.T @ x.reshape(-1, self.in_features)}
            if self.bias_enabled:
                grads["bias"] = rows_dy.sum(axis=0)
            return d_y @ weight, grads

        return y, backward

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias_enabled}"
        return s + (f", dtype={self._dtype}" if self._dtype != np.float32 else "")


class Embedding(Module):
    """PyTorch's ``nn.Embedding``: ``y[...] = weight[ids[...]]``.

    ``ids`` is an integer array of any shape ``(*)`` with values in
    ``[0, num_embeddings)``; ``y`` is ``(*, embedding_dim)``.  ``weight`` is
    ``(num_embeddings, embedding_dim)``, drawn from ``N(0, 1)``.
    """

    def __init__(self, num_embeddings, embedding_dim, *, dtype=np.float32, seed=None):
        super().__init__()
        self.num_embeddings = checks.check_size("num_embeddings", num_embeddings, allow_numpy=True)
        self.embedding_dim = checks.check_size("embedding_dim", embedding_dim, allow_numpy=True)
        self._dtype = as_float_dtype(dtype)
        self.generator = as_generator(seed)
        self._register_parameter("weight", np.empty((self.num_embeddings, self.embedding_dim), self._dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw ``weight`` from ``N(0, 1)``."""
        self.weight[...] = self.generator.standard_normal(self.weight.shape)

    def __call__(self, ids):
        return self.forward(ids)

    def _check(self, ids) -> np.ndarray:
        checks.check_array("Embedding", "input", ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise RuntimeError(
                "Expected tensor for argument #1 'indices' to have one of the following scalar types: "
                f"Long, Int; but got {ids.dtype} instead (while checking arguments for embedding)"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise IndexError(f"index {bad} is out of range for Embedding({self.num_embeddings}, ...)")
        return ids

    def forward(self, ids):
        """``ids (*) int -> y (*, embedding_dim)``."""
        return self.weight[self._check(ids)]

    def forward_train(self, ids):
        """``(y, backward)``; ``backward(d_y) -> (None, {"weight": scatter-add of d_y by id})``."""
        y = self.forward(ids)
        ids = np.array(ids, copy=True)  # the caller may edit ids before backward

        def backward(d_y):
            d_y = np.asarray(d_y, dtype=self._dtype)
            if d_y.shape != y.shape:
                raise ValueError(f"d_y should have the output's shape {y.shape}, got {d_y.shape}")
            d_weight = np.zeros_like(self.weight)
            np.add.at(d_weight, ids.reshape(-1), d_y.reshape(-1, self.embedding_dim))
            return None, {"weight": d_weight}

        return y, backward

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", dtype={self._dtype}" if self._dtype != np.float32 else "")


def _rows(x) -> int:
    return int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1
