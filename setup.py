"""Build the compiled core. All metadata lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

# -O3 lets GCC vectorise the gate loops; -fno-math-errno (not -ffast-math,
# which would break NaN handling and IEEE semantics) lets it call glibc's
# SIMD expf/tanhf variants.
extensions = [
    Extension(
        "lstmkit._core",
        ["lstmkit/_core.pyx"],
        extra_compile_args=["-O3", "-fno-math-errno"],
    )
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
