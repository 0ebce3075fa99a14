import numpy as np
import pytest

from lstmkit.registry import available_backends


@pytest.fixture(params=available_backends())
def backend(request):
    """Every backend that can run here (the compiled one only when built)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
