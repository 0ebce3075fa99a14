"""Every module and cell survives pickle and copy.deepcopy on every backend; repr shows cell options."""
import copy
import pickle

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

import lstmkit
from lstmkit.backends import ReferenceBackend
from lstmkit.cells import LSTMCellType
from lstmkit.model import SequenceModel
from lstmkit.nn.layers import Embedding, Linear
from lstmkit.specs import CellSpec
from lstmkit.testing import registered_plugin

ROUND_TRIPS = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "deepcopy": copy.deepcopy,
}

RECURRENT = {
    "LSTM": lambda b: (lstmkit.LSTM(3, 5, num_layers=2, dropout=0.5, proj_size=2, backend=b, seed=0), (4, 2, 3)),
    "GRU": lambda b: (lstmkit.GRU(3, 5, bidirectional=True, batch_first=True, backend=b, seed=0), (2, 4, 3)),
    "RNN": lambda b: (lstmkit.RNN(3, 5, nonlinearity="relu", dtype=np.float64, backend=b, seed=0), (4, 3)),
    "LSTMCell": lambda b: (lstmkit.LSTMCell(3, 5, backend=b, seed=0), (2, 3)),
    "GRUCell": lambda b: (lstmkit.GRUCell(3, 5, bias=False, backend=b, seed=0), (2, 3)),
    "RNNCell": lambda b: (lstmkit.RNNCell(3, 5, dtype=np.float64, backend=b, seed=0), (3,)),
}


def outputs(m, x):
    result = m(x)
    flat = []
    for part in result if isinstance(result, tuple) else (result,):
        flat.extend(part if isinstance(part, tuple) else (part,))
    return flat


@pytest.mark.parametrize("trip", list(ROUND_TRIPS))
@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_modules_round_trip(backend, name, trip):
    m, shape = RECURRENT[name](backend)
    x = np.random.default_rng(0).standard_normal(shape).astype(m.dtype)
    c = ROUND_TRIPS[trip](m)
    assert type(c) is type(m) and repr(c) == repr(m)
    assert c.backend is m.backend and c.training == m.training  # a registered backend: by name
    # Same parameters and generator state: identical outputs, dropout masks included.
    for a, b in zip(outputs(m, x), outputs(c, x)):
        np.testing.assert_array_equal(a, b)
    # Training works on the copy, and the copy is independent of the original.
    c.load_state_dict({k: v * 0 for k, v in c.state_dict().items()})
    assert any(np.any(v != 0) for v in m.parameters())
    result = c.forward_train(x)
    assert callable(result[-1])


@pytest.mark.parametrize("trip", list(ROUND_TRIPS))
def test_layers_and_sequence_model_round_trip(backend, trip):
    ids = np.array([[1, 2, 3], [4, 0, 2]])
    model = SequenceModel(vocab_size=5, hidden_size=4, output_size=3, num_layers=2, dropout=0.2,
                          backend=backend, seed=0)
    copied = ROUND_TRIPS[trip](model)
    np.testing.assert_array_equal(copied(ids, lengths=[3, 2]), model(ids, lengths=[3, 2]))
    assert copied.rnn.generator is copied.generator  # one shared generator, as built
    for layer, x in ((Linear(3, 2, seed=0), np.ones((2, 3), np.float32)), (Embedding(5, 2, seed=0), ids)):
        np.testing.assert_array_equal(ROUND_TRIPS[trip](layer)(x), layer(x))


def test_reference_backend_keeps_its_array_module_by_name():
    b = pickle.loads(pickle.dumps(ReferenceBackend(np, "mine")))
    assert b.xp is np and b.name == "mine"
    # An unregistered backend instance is pickled as itself.
    m = lstmkit.GRU(2, 3, backend=ReferenceBackend(np, "mine"), seed=0)
    c = pickle.loads(pickle.dumps(m))
    assert isinstance(c.backend, ReferenceBackend) and c.backend.name == "mine"
    x = np.ones((2, 1, 2), np.float32)
    np.testing.assert_array_equal(c(x)[0], m(x)[0])


# -- repr with cell options -----------------------------------------------------------------

class ClipOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cell_clip: float = 1.0


class ClippedLSTM(LSTMCellType):
    name = "clipped_lstm_repr_test"
    torch_mode = None

    def __init__(self, cell_clip=1.0):
        self.cell_clip = cell_clip


class ClipPlugin:
    @staticmethod
    @lstmkit.hookimpl
    def register_cells(register):
        register(CellSpec(ClippedLSTM.name, ClippedLSTM, ClipOptions, "a test cell with options"))


def test_repr_shows_cell_options():
    with registered_plugin(ClipPlugin, "clip-plugin-repr-test"):
        m = lstmkit.Recurrent(ClippedLSTM.name, 3, 4, num_layers=2, cell_options={"cell_clip": 0.5})
        assert repr(m) == "Recurrent('clipped_lstm_repr_test', 3, 4, num_layers=2, cell_options={'cell_clip': 0.5})"
        assert m.cell.cell_clip == 0.5
        c = lstmkit.RecurrentCell(ClippedLSTM.name, 3, 4, cell_options={"cell_clip": 0.25})
        assert repr(c) == "RecurrentCell('clipped_lstm_repr_test', 3, 4, cell_options={'cell_clip': 0.25})"
        assert repr(lstmkit.Recurrent(ClippedLSTM.name, 3, 4)) == "Recurrent('clipped_lstm_repr_test', 3, 4)"
    assert repr(lstmkit.LSTM(3, 4)) == "LSTM(3, 4)"
