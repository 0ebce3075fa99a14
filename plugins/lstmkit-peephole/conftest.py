"""Make ``peephole`` available to the tests, installed or not.

When the distribution is installed, its entry point registers the cell.
From a plain source checkout (``python -m pytest`` in this folder, without
``pip install``), pytest puts this folder on ``sys.path`` and the fixture
registers the module in-process for the session.
"""
import pytest

from lstmkit.registry import available_cells
from lstmkit.testing import registered_plugin


@pytest.fixture(scope="session", autouse=True)
def peephole_registered():
    if "peephole" in available_cells():
        yield
        return
    import lstmkit_peephole

    with registered_plugin(lstmkit_peephole, "peephole"):
        yield
