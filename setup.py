"""Build the compiled core. All metadata lives in pyproject.toml."""
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

# -O3 vectorises the gate loops (branch-free tanh in _core.pyx, no libm calls).
# -fno-trapping-math lets GCC if-convert the clamp inside tanh into a SIMD
# select; it changes no result (unlike -ffast-math, which would break NaN/inf
# handling and IEEE semantics).  AVX2/AVX-512 come from per-function
# target_clones in _core.pyx, so the binary stays portable (no -march=native).
if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    compile_args = ["-O3", "-fno-trapping-math"]

extensions = [
    Extension("lstmkit._core", ["lstmkit/_core.pyx"], extra_compile_args=compile_args)
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )
)
