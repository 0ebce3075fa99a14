"""The fused gate math of the LSTM and GRU steps, forward and backward.

Each function does, for the rows of one time step, all the elementwise work
between two GEMMs, in one pass:

* ``lstm_forward``: gates from the two projections, new cell state, ``h``;
* ``lstm_backward``: gradients of the four gate pre-activations and of ``c_{t-1}``;
* ``gru_forward``: ``r, z, n``, the recurrent ``n`` term (kept for backward), ``h``;
* ``gru_backward``: gradients of both projections' pre-activations and the
  direct part of ``dh_{t-1}``.

Arguments are arrays of one shape ``(B, H)`` (often column blocks of wider
arrays: strided views are fine) or ``(H,)`` bias vectors broadcast along the
rows.  Outputs come last and are written in place.  An output may be the very
same array object as an input (``c`` and ``c_prev``, ``dc_prev`` and ``dc``):
every input is read before any output is written, element by element.

Two implementations with the same signatures:

:class:`CudaGateKernels`
    one ``cupy.ElementwiseKernel`` per function (chainer's pattern): templated on
    ``T`` (float32/float64), compiled by CuPy on first use and cached.
:class:`ArrayGateMath`
    the same formulas as plain array operations of any array module ``xp``;
    used when ``xp`` is NumPy (the CPU test path) and on CuPy with
    ``CupyBackend(fused=False)`` (to cross-check the kernels).

Sigmoid is ``tanh(x/2)/2 + 1/2`` everywhere, as in :func:`lstmkit.cells.sigmoid`.
"""
from __future__ import annotations

from lstmkit.cells import sigmoid

# -- CUDA ------------------------------------------------------------------------
# ElementwiseKernel binds every non-raw input as ``const T &name`` (a reference,
# no copy) and every output as ``T &name``; so each body first reads its inputs
# into locals, then computes, then writes the outputs.  ("i" is reserved by CuPy
# as the loop index and may not name a parameter.)

PREAMBLE = r"""
template <typename T> __device__ __forceinline__ T lk_sigmoid(T x) {
    const T half = 0.5;
    return tanh(x * half) * half + half;
}
"""

LSTM_FORWARD = dict(
    in_params="T xi, T xf, T xg, T xo, T hi, T hf, T hg, T ho, T c_prev",
    out_params="T gate_i, T gate_f, T gate_g, T gate_o, T tanh_c, T c, T h",
    operation=r"""
    const T a_i = xi + hi;
    const T a_f = xf + hf;
    const T a_g = xg + hg;
    const T a_o = xo + ho;
    const T cp = c_prev;
    const T s_i = lk_sigmoid(a_i);
    const T s_f = lk_sigmoid(a_f);
    const T t_g = tanh(a_g);
    const T s_o = lk_sigmoid(a_o);
    const T c_new = s_f * cp + s_i * t_g;
    const T t_c = tanh(c_new);
    gate_i = s_i;
    gate_f = s_f;
    gate_g = t_g;
    gate_o = s_o;
    tanh_c = t_c;
    c = c_new;
    h = s_o * t_c;
    """,
    name="lstmkit_lstm_forward",
)

LSTM_BACKWARD = dict(
    in_params="T gate_i, T gate_f, T gate_g, T gate_o, T tanh_c, T c_prev, T dh, T dc",
    out_params="T d_i, T d_f, T d_g, T d_o, T dc_prev",
    operation=r"""
    const T s_i = gate_i;
    const T s_f = gate_f;
    const T t_g = gate_g;
    const T s_o = gate_o;
    const T t_c = tanh_c;
    const T cp = c_prev;
    const T dh_v = dh;
    const T dc_v = dc;
    const T one = 1;
    const T dc_t = dc_v + dh_v * s_o * (one - t_c * t_c);
    d_i = dc_t * t_g * s_i * (one - s_i);
    d_f = dc_t * cp * s_f * (one - s_f);
    d_g = dc_t * s_i * (one - t_g * t_g);
    d_o = dh_v * t_c * s_o * (one - s_o);
    dc_prev = dc_t * s_f;
    """,
    name="lstmkit_lstm_backward",
)

GRU_FORWARD = dict(
    in_params="T xr, T xz, T xn, T hr, T hz, T hn, T br, T bz, T bn, T h_prev",
    out_params="T gate_r, T gate_z, T gate_n, T gh_n, T h",
    operation=r"""
    const T hp = h_prev;
    const T s_r = lk_sigmoid(xr + (hr + br));
    const T s_z = lk_sigmoid(xz + (hz + bz));
    const T g_n = hn + bn;
    const T t_n = tanh(xn + s_r * g_n);
    gate_r = s_r;
    gate_z = s_z;
    gate_n = t_n;
    gh_n = g_n;
    h = t_n + s_z * (hp - t_n);
    """,
    name="lstmkit_gru_forward",
)

GRU_BACKWARD = dict(
    in_params="T gate_r, T gate_z, T gate_n, T gh_n, T h_prev, T dh",
    out_params="T d_xr, T d_xz, T d_xn, T d_hr, T d_hz, T d_hn, T dh_prev",
    operation=r"""
    const T s_r = gate_r;
    const T s_z = gate_z;
    const T t_n = gate_n;
    const T g_n = gh_n;
    const T hp = h_prev;
    const T dh_v = dh;
    const T one = 1;
    const T dn = dh_v * (one - s_z) * (one - t_n * t_n);
    const T dr = dn * g_n * s_r * (one - s_r);
    const T dz = dh_v * (hp - t_n) * s_z * (one - s_z);
    d_xr = dr;
    d_xz = dz;
    d_xn = dn;
    d_hr = dr;
    d_hz = dz;
    d_hn = dn * s_r;
    dh_prev = dh_v * s_z;
    """,
    name="lstmkit_gru_backward",
)

KERNELS = {
    "lstm_forward": LSTM_FORWARD,
    "lstm_backward": LSTM_BACKWARD,
    "gru_forward": GRU_FORWARD,
    "gru_backward": GRU_BACKWARD,
}


class CudaGateKernels:
    """The fused gate functions as ``cupy.ElementwiseKernel`` objects.

    Creating an ``ElementwiseKernel`` compiles nothing; CuPy compiles each
    kernel for a dtype and argument layout on its first call and caches the
    binary (also on disk, ``~/.cupy/kernel_cache``).
    """

    fused = True

    def __init__(self, cupy):
        self.xp = cupy
        for key, spec in KERNELS.items():
            kernel = cupy.ElementwiseKernel(
                spec["in_params"], spec["out_params"], spec["operation"], spec["name"],
                preamble=PREAMBLE, no_return=True,
            )
            setattr(self, key, kernel)


class ArrayGateMath:
    """The fused gate functions as array operations of ``xp`` (NumPy or CuPy)."""

    fused = False

    def __init__(self, xp):
        self.xp = xp

    def lstm_forward(self, xi, xf, xg, xo, hi, hf, hg, ho, c_prev,
                     gate_i, gate_f, gate_g, gate_o, tanh_c, c, h):
        xp = self.xp
        s_i = sigmoid(xp, xi + hi)
        s_f = sigmoid(xp, xf + hf)
        t_g = xp.tanh(xg + hg)
        s_o = sigmoid(xp, xo + ho)
        c_new = s_f * c_prev + s_i * t_g  # c_prev is read here, before c is written
        t_c = xp.tanh(c_new)
        gate_i[...] = s_i
        gate_f[...] = s_f
        gate_g[...] = t_g
        gate_o[...] = s_o
        tanh_c[...] = t_c
        c[...] = c_new
        h[...] = s_o * t_c

    def lstm_backward(self, gate_i, gate_f, gate_g, gate_o, tanh_c, c_prev, dh, dc,
                      d_i, d_f, d_g, d_o, dc_prev):
        dc_t = dc + dh * gate_o * (1 - tanh_c * tanh_c)
        d_i[...] = dc_t * gate_g * gate_i * (1 - gate_i)
        d_f[...] = dc_t * c_prev * gate_f * (1 - gate_f)
        d_g[...] = dc_t * gate_i * (1 - gate_g * gate_g)
        d_o[...] = dh * tanh_c * gate_o * (1 - gate_o)
        dc_prev[...] = dc_t * gate_f

    def gru_forward(self, xr, xz, xn, hr, hz, hn, br, bz, bn, h_prev,
                    gate_r, gate_z, gate_n, gh_n, h):
        xp = self.xp
        s_r = sigmoid(xp, xr + (hr + br))
        s_z = sigmoid(xp, xz + (hz + bz))
        g_n = hn + bn
        t_n = xp.tanh(xn + s_r * g_n)
        h_new = t_n + s_z * (h_prev - t_n)
        gate_r[...] = s_r
        gate_z[...] = s_z
        gate_n[...] = t_n
        gh_n[...] = g_n
        h[...] = h_new

    def gru_backward(self, gate_r, gate_z, gate_n, gh_n, h_prev, dh,
                     d_xr, d_xz, d_xn, d_hr, d_hz, d_hn, dh_prev):
        dn = dh * (1 - gate_z) * (1 - gate_n * gate_n)
        dr = dn * gh_n * gate_r * (1 - gate_r)
        dz = dh * (h_prev - gate_n) * gate_z * (1 - gate_z)
        d_prev = dh * gate_z
        d_xr[...] = dr
        d_xz[...] = dz
        d_xn[...] = dn
        d_hr[...] = dr
        d_hz[...] = dz
        d_hn[...] = dn * gate_r
        dh_prev[...] = d_prev


def gate_math(xp, fused: bool = True):
    """The gate functions for ``xp``: CUDA kernels on CuPy (unless ``fused=False``), else array ops."""
    import numpy

    if fused and xp is not numpy and hasattr(xp, "ElementwiseKernel"):
        return CudaGateKernels(xp)
    return ArrayGateMath(xp)
