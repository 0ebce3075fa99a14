"""Built-in tasks: registration, options models, deterministic data and splits, metrics, predict I/O."""
import json
import math
from pathlib import Path

import numpy as np
import pydantic
import pytest

from lstmkit import SequenceModel
from lstmkit.registry import get_registry
from lstmkit.tasks import Split, TaskError
from lstmkit.train import LOSSES, make_optimizer, sequence_mask

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
NAMES = ["adding", "char_lm", "copy", "csv", "sequence_classification", "sine"]
SMALL = {"num_train": 20, "num_valid": 8, "num_test": 8}


def make(name, options=None, *, seed=0, splits=None, base_dir=DATA):
    """Like the trainer: options validated by the spec's model, then the factory."""
    spec = get_registry().task_spec(name)
    validated = spec.options_model(**(options or {})).model_dump()
    return spec.factory(validated, base_dir=base_dir, seed=seed, splits=splits)


def same_data(a, b):
    return all(
        np.array_equal(getattr(a[k], f), getattr(b[k], f)) for k in ("train", "valid", "test")
        for f in ("inputs", "targets")
    )


# -- registration and options ----------------------------------------------------------------
def test_every_builtin_task_is_registered_with_an_options_model():
    specs = get_registry().specs["task"]
    assert sorted(specs) == NAMES
    for name, spec in specs.items():
        assert spec.description and spec.metrics
        model = spec.options_model
        assert model.model_config["extra"] == "forbid"
        for field_name, field in model.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"
        with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
            model(no_such_option=1)
        schema = model.model_json_schema()
        assert schema["additionalProperties"] is False


def test_options_are_validated():
    spec = get_registry().task_spec("sine")
    with pytest.raises(pydantic.ValidationError, match="seq_len"):
        spec.options_model(seq_len=0)
    with pytest.raises(pydantic.ValidationError, match="should not exceed max_period"):
        spec.options_model(min_period=50, max_period=10)
    with pytest.raises(pydantic.ValidationError, match="valid_fraction \\+ test_fraction"):
        get_registry().task_spec("csv").options_model(valid_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize("name", ["sine", "adding", "copy"])
def test_synthetic_tasks_are_deterministic_and_refuse_files(name):
    a, b = make(name, SMALL, seed=3).data(), make(name, SMALL, seed=3).data()
    assert same_data(a, b)
    assert not same_data(a, make(name, SMALL, seed=4).data())
    assert same_data(make(name, {**SMALL, "data_seed": 3}, seed=99).data(), a)
    # Splits draw from independent streams: a bigger train split leaves valid/test alone.
    bigger = make(name, {**SMALL, "num_train": 30}, seed=3).data()
    assert np.array_equal(bigger["valid"].inputs, a["valid"].inputs)
    with pytest.raises(TaskError, match=f"task '{name}' generates its data from the seed; task.train should be null"):
        make(name, SMALL, splits={"train": "x.csv", "valid": None, "test": None})


def _fingerprint(data):
    """Per split and array: the sum and a position-weighted sum (a reordered or changed draw moves both)."""
    out = []
    for k in ("train", "valid", "test"):
        for a in (data[k].inputs, data[k].targets):
            a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
            w = np.arange(1, a.size + 1, dtype=np.float64).reshape(a.shape) % 97
            out += [float(a.sum()), float((a * w).sum())]
    return out


# The data of every synthetic task for a fixed seed, pinned: a refactor must keep the same RNG
# draws in the same order.  (Checksums with a tolerance rather than a byte hash: np.sin may
# differ by an ulp between CPUs.)
PINNED = {
    "sine": (((1000, 50, 1), (1000, 50, 1)), [
        42.97960863831031, -418.8680420852361, 90.64061875806874, 1896.28590748821,
        -30.727390795917017, -2551.0507614681555, -37.19690145862114, -2735.1875649318245,
        -106.29617032672968, -2599.2921127775276, -87.9918159463457, -1934.3494771911894]),
    "adding": (((2000, 50, 2), (2000, 1)), [
        54049.736867373904, 2597781.0710538523, 1967.8697539269924, 93038.64256048948,
        13567.74749580711, 651486.8139589196, 503.5384839475155, 23299.48870177567,
        13492.859251245969, 647948.8433742153, 501.3751006424427, 23144.57224969566]),
    "copy": (((2000, 40), (2000, 40)), [
        107998.0, 5185221.0, 89998.0, 4325932.0, 21617.0, 1040903.0,
        18017.0, 864549.0, 21759.0, 1043259.0, 18159.0, 873202.0]),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_synthetic_task_data_is_pinned(name):
    data = make(name, seed=7).data()
    shapes, sums = PINNED[name]
    assert (data["train"].inputs.shape, data["train"].targets.shape) == shapes
    assert all(d.lengths is None for d in data.values())
    assert _fingerprint(data) == pytest.approx(sums, rel=1e-9, abs=1e-6)


def test_sine_data():
    task = make("sine", {**SMALL, "noise": 0.0, "horizon": 3, "seq_len": 12})
    train = task.data()["train"]
    assert train.inputs.shape == (20, 12, 1) and train.targets.shape == (20, 12, 1) and train.lengths is None
    assert train.inputs.dtype == np.float32
    np.testing.assert_array_equal(train.targets[:, :-3], train.inputs[:, 3:])  # noise 0: target = input h steps on
    assert np.abs(train.inputs).max() <= 1.0
    assert (task.input_kind, task.input_size, task.output_size, task.target, task.loss) == (
        "features", 1, 1, "sequence", "mse")
    m = task.metrics(train.targets + 0.5, train.targets)
    assert m == pytest.approx({"mse": 0.25, "mae": 0.5, "rmse": 0.5})
    inputs, lengths = task.read_inputs(DATA / "sine_inputs.txt")
    assert inputs.shape == (3, 50, 1) and lengths is None
    preds = task.format_predictions(np.ones((2, 4, 1)), np.array([4, 2]))
    assert preds[1] == {"horizon": 3, "forecast": 1.0, "per_step": [1.0, 1.0]}
    json.dumps(preds)


def test_adding_data():
    task = make("adding", {**SMALL, "seq_len": 10})
    train = task.data()["train"]
    values, markers = train.inputs[..., 0], train.inputs[..., 1]
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :5].sum(axis=1) == 1) and np.all(markers[:, 5:].sum(axis=1) == 1)
    np.testing.assert_allclose(train.targets[:, 0], (values * markers).sum(axis=1), rtol=1e-6)
    assert train.targets.shape == (20, 1) and task.target == "last"
    assert task.metrics(train.targets, train.targets) == {"mse": 0.0}


def test_adding_reads_json_npy_and_npz(tmp_path):
    task = make("adding", SMALL)
    (tmp_path / "in.json").write_text(json.dumps([[[0.5, 1], [0.2, 0], [0.1, 1]], [[0.3, 1], [0.4, 1]]]))
    inputs, lengths = task.read_inputs(tmp_path / "in.json")
    assert inputs.shape == (2, 3, 2) and lengths.tolist() == [3, 2] and inputs[1, 2].tolist() == [0, 0]
    np.save(tmp_path / "in.npy", np.zeros((4, 6, 2)))
    assert task.read_inputs(tmp_path / "in.npy")[0].shape == (4, 6, 2)
    np.savez(tmp_path / "in.npz", inputs=np.zeros((2, 6, 2)), lengths=np.array([6, 3]))
    assert task.read_inputs(tmp_path / "in.npz")[1].tolist() == [6, 3]
    with pytest.raises(TaskError, match=r"expected inputs \(batch, time, 2\)"):
        np.save(tmp_path / "bad.npy", np.zeros((4, 6, 3)))
        task.read_inputs(tmp_path / "bad.npy")
    assert task.format_predictions(np.array([[0.7], [1.2]])) == [0.7, 1.2]


def test_copy_data_metrics_and_predict_io():
    task = make("copy", {**SMALL, "num_symbols": 4, "copy_len": 3, "delay": 2})
    train = task.data()["train"]
    assert task.vocab_size == 6 and task.output_size == 5 and train.inputs.shape == (20, 8)
    assert np.array_equal(train.targets[:, -3:], train.inputs[:, :3])
    assert np.all(train.inputs[:, 4] == 5) and not train.targets[:, :5].any() and not train.inputs[:, 5:].any()
    perfect = np.eye(5)[train.targets] * 10
    assert task.metrics(perfect, train.targets) == {"accuracy": 1.0, "sequence_accuracy": 1.0}
    wrong = perfect.copy()
    wrong[0, -1] = np.roll(wrong[0, -1], 1)
    m = task.metrics(wrong, train.targets)
    assert m["accuracy"] == pytest.approx(1 - 1 / 60) and m["sequence_accuracy"] == pytest.approx(19 / 20)
    path = DATA / "copy_inputs.txt"
    with pytest.raises(TaskError, match=r"expected 3 symbols in 1\.\.4"):
        task.read_inputs(path)  # the example file is for the defaults (10 symbols of 8)
    default = make("copy", SMALL)
    ids, lengths = default.read_inputs(path)
    assert ids.shape == (2, 40) and lengths is None and ids[0, :10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 1, 2]
    logits = np.eye(9)[np.concatenate([np.zeros((2, 30), int), ids[:, :10]], axis=1)]
    assert default.format_predictions(logits) == ids[:, :10].tolist()


def test_char_lm_splits_windows_and_metrics():
    task = make("char_lm", {"seq_len": 16}, splits={"train": "lighthouse.txt", "valid": None, "test": None})
    text = (DATA / "lighthouse.txt").read_text()
    assert "".join(task.texts[k] for k in ("train", "valid", "test")) == text
    assert len(task.texts["test"]) == round(0.1 * len(text)) == len(task.texts["valid"])
    assert task.vocab == sorted(set(text)) and task.vocab_size == task.output_size == len(task.vocab)
    data = task.data()
    for k, split in data.items():
        mask = split.mask()
        ids = split.inputs[mask] if mask is not None else split.inputs.reshape(-1)
        assert task.decode(ids) == task.texts[k][:-1]  # windows tile the text
        targets = split.targets[mask] if mask is not None else split.targets.reshape(-1)
        assert task.decode(targets) == task.texts[k][1:]
    # Uniform logits: perplexity = vocabulary size, bits per char = log2 of it.
    valid = data["valid"]
    m = task.metrics(np.zeros(valid.targets.shape + (task.vocab_size,)), valid.targets, valid.lengths)
    assert m["perplexity"] == pytest.approx(task.vocab_size) and m["bits_per_char"] == pytest.approx(math.log2(task.vocab_size))
    # The loss the trainer computes on the same outputs agrees with the metric.
    loss, _ = LOSSES[task.loss](np.zeros(valid.targets.shape + (task.vocab_size,)), valid.targets,
                                None if valid.lengths is None else sequence_mask(valid.lengths, valid.inputs.shape[1]))
    assert math.exp(loss) == pytest.approx(m["perplexity"])


def test_char_lm_separate_files_sampling_and_predict(tmp_path):
    (tmp_path / "train.txt").write_text("abcabcabcabc")
    (tmp_path / "valid.txt").write_text("cab")
    task = make("char_lm", {"seq_len": 4, "test_fraction": 0.25}, base_dir=tmp_path,
                splits={"train": "train.txt", "valid": "valid.txt", "test": None})
    assert task.texts == {"train": "abcabcabc", "valid": "cab", "test": "abc"}
    assert task.vocab == ["a", "b", "c"]
    m = SequenceModel(vocab_size=3, hidden_size=4, output_size=3, seed=0)
    m.train()
    one = task.sample(m, "ab", length=10, temperature=1.0, rng=0)
    assert one == task.sample(m, "ab", length=10, temperature=1.0, rng=0) and len(one) == 12 and one[:2] == "ab"
    assert m.training  # mode restored
    greedy = task.sample(m, "ab", length=5, temperature=0)
    assert greedy == task.sample(m, "ab", length=5, temperature=0, rng=123)
    with pytest.raises(TaskError, match="not in the training vocabulary: 'z'"):
        task.sample(m, "az")
    (tmp_path / "in.txt").write_text("abc\n\nca\n")
    ids, lengths = task.read_inputs(tmp_path / "in.txt")
    assert ids.tolist() == [[0, 1, 2], [2, 0, 0]] and lengths.tolist() == [3, 2]
    preds = task.format_predictions(m(ids, lengths), lengths)
    assert len(preds[1]["predicted"]) == 2 and len(preds[0]["next"]) == 3
    assert sum(p for _, p in preds[0]["next"]) == pytest.approx(1.0, abs=1e-5)
    json.dumps(preds)


def test_file_tasks_need_files(tmp_path):
    with pytest.raises(TaskError, match="set task.train to a text file"):
        make("char_lm")
    with pytest.raises(TaskError, match=r"task.train: file not found: .*missing\.csv"):
        make("csv", splits={"train": "missing.csv"}, base_dir=tmp_path)
    (tmp_path / "tiny.txt").write_text("abcdefghij")
    with pytest.raises(TaskError, match="the valid text has 1 character"):
        make("char_lm", splits={"train": "tiny.txt"}, base_dir=tmp_path)


# -- csv ------------------------------------------------------------------------------------------
def write_series(path, rows=40):
    lines = ["time,x,y,label"] + [f"t{i},{i},{10 * i + (i % 3)},a" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_csv_windows_normalisation_and_metrics(tmp_path):
    write_series(tmp_path / "s.csv")
    task = make("csv", {"window": 4, "horizon": 2, "valid_fraction": 0.25, "test_fraction": 0.25},
                base_dir=tmp_path, splits={"train": "s.csv"})
    assert task.columns == ["x", "y"] and task.target_columns == ["x", "y"]  # non-numeric columns skipped
    assert [len(t) for t in task.tables.values()] == [20, 10, 10]
    # Normalisation fitted on the train rows (0..19) only.
    np.testing.assert_allclose(task.mean[0], 9.5)
    np.testing.assert_allclose(task.std[0], np.arange(20).std())
    data = task.data()
    train, valid = data["train"], data["valid"]
    assert train.inputs.shape == (20 - 4 - 2 + 1, 4, 2) and train.targets.shape == (15, 2)
    x = train.inputs[..., 0] * task.std[0] + task.mean[0]
    np.testing.assert_allclose(x[3], [3, 4, 5, 6], atol=1e-5)
    np.testing.assert_allclose(task.denormalize(train.targets)[3], [8, 80 + 2], atol=1e-4)
    np.testing.assert_allclose(valid.inputs[0, :, 0] * task.std[0] + task.mean[0], [20, 21, 22, 23], atol=1e-5)
    assert task.metrics(valid.targets, valid.targets)["mse"] == pytest.approx(0.0, abs=1e-12)
    off = valid.targets + np.array([1 / task.std[0], 0], np.float32)  # +1 in x's units
    assert task.metrics(off, valid.targets)["mae"] == pytest.approx(0.5, rel=1e-5)
    inputs, lengths = task.read_inputs(tmp_path / "s.csv")
    assert inputs.shape == (1, 4, 2) and lengths is None
    np.testing.assert_allclose(inputs[0, :, 0] * task.std[0] + task.mean[0], [36, 37, 38, 39], atol=1e-5)
    pred = task.format_predictions(np.zeros((1, 2)))
    assert pred == [{"horizon": 2, "forecast": {"x": pytest.approx(9.5), "y": pytest.approx(task.mean[1])}}]


def test_csv_options_and_errors(tmp_path):
    write_series(tmp_path / "s.csv")
    write_series(tmp_path / "v.csv", rows=8)
    task = make("csv", {"columns": ["y"], "targets": ["x"], "window": 3, "normalize": False},
                base_dir=tmp_path, splits={"train": "s.csv", "valid": "v.csv"})
    assert task.input_size == 1 and task.output_size == 1 and len(task.tables["valid"]) == 8
    assert len(task.tables["train"]) == 34  # 15 % of 40 rows -> test, none -> valid (its own file)
    assert task.data()["train"].targets[0, 0] == 3.0  # x three rows on, unnormalised
    with pytest.raises(TaskError, match="task.options.columns: no column 'z' in .*s.csv \\(the header has: time, x, y, label\\)"):
        make("csv", {"columns": ["z"]}, base_dir=tmp_path, splits={"train": "s.csv"})
    with pytest.raises(TaskError, match=r"s\.csv:2: column 'label': 'a' is not a number"):
        make("csv", {"columns": ["label"]}, base_dir=tmp_path, splits={"train": "s.csv"})
    with pytest.raises(TaskError, match="the valid split has 6 rows; window \\+ horizon = 11"):
        make("csv", {"window": 10}, base_dir=tmp_path, splits={"train": "s.csv"})


# -- sequence classification ----------------------------------------------------------------------
def test_classification_csv_stratified_split_and_scaling():
    task = make("sequence_classification", splits={"train": "waveforms.csv"})
    assert task.classes == ["sawtooth", "sine", "square"] and task.output_size == 3
    assert (task.input_kind, task.input_size, task.target, task.loss) == ("features", 1, "last", "cross_entropy")
    data = task.data()
    assert [len(s) for s in data.values()] == [126, 27, 27]
    for split in data.values():
        assert np.bincount(split.targets, minlength=3).min() >= 9  # every class in every split
        assert split.lengths is not None and split.inputs.shape[1] == split.lengths.max()
        assert not split.inputs[~split.mask()].any()  # padding stays 0 after scaling
    train = data["train"]
    valid_steps = train.inputs[train.mask()]
    assert abs(valid_steps.mean()) < 1e-5 and abs(valid_steps.std() - 1) < 1e-4  # fitted on train only
    again = make("sequence_classification", splits={"train": "waveforms.csv"}).data()
    assert same_data(data, again)
    other = make("sequence_classification", {"split_seed": 1}, splits={"train": "waveforms.csv"}).data()
    assert not same_data(other, data)
    logits = np.eye(3)[data["test"].targets]
    assert task.metrics(logits, data["test"].targets) == {"accuracy": 1.0}
    inputs, lengths = task.read_inputs(DATA / "waveforms_unlabelled.csv")
    assert inputs.shape[0] == 6 and inputs.dtype == np.float32 and lengths is not None
    preds = task.format_predictions(np.array([[0.0, 5.0, 0.0]]))
    assert preds[0]["label"] == "sine" and preds[0]["probabilities"]["sine"] > 0.98


def test_classification_npz_tokens_and_files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tok.npz", inputs=rng.integers(0, 7, (40, 5)), labels=np.repeat([3, 10], 20),
             lengths=rng.integers(1, 6, 40))
    task = make("sequence_classification", {"valid_fraction": 0.25, "test_fraction": 0.25},
                base_dir=tmp_path, splits={"train": "tok.npz"})
    assert task.input_kind == "tokens" and task.vocab_size <= 7 and task.classes == ["3", "10"]
    assert [len(s) for s in task.data().values()] == [20, 10, 10]
    assert task.data()["train"].inputs.dtype == np.int64
    np.savez(tmp_path / "feat.npz", inputs=rng.standard_normal((12, 6, 2)), labels=np.array(["a", "b", "c"] * 4))
    np.savez(tmp_path / "feat_test.npz", inputs=rng.standard_normal((3, 4, 2)), labels=np.array(["a", "b", "c"]))
    task = make("sequence_classification", {"valid_fraction": 0.25, "normalize": False}, base_dir=tmp_path,
                splits={"train": "feat.npz", "test": "feat_test.npz"})
    assert task.input_size == 2 and [len(s) for s in task.data().values()] == [9, 3, 3]
    assert task.data()["test"].inputs.shape == (3, 4, 2) and task.data()["test"].lengths is None
    inputs, lengths = task.read_inputs(tmp_path / "feat_test.npz")
    assert inputs.shape == (3, 4, 2) and lengths is None
    (tmp_path / "one.csv").write_text("x,1,2\nx,3,4\n")
    with pytest.raises(TaskError, match="found one class"):
        make("sequence_classification", base_dir=tmp_path, splits={"train": "one.csv"})
    (tmp_path / "gap.csv").write_text("x,1,nan,2\ny,3,4\n")
    with pytest.raises(TaskError, match=r"gap\.csv:1: .*no gaps"):
        make("sequence_classification", base_dir=tmp_path, splits={"train": "gap.csv"})


# -- every task with the model it asks for --------------------------------------------------------
TASK_SETUPS = {
    "sine": (SMALL, None),
    "adding": (SMALL, None),
    "copy": (SMALL, None),
    "char_lm": ({}, {"train": "lighthouse.txt"}),
    "csv": ({"columns": ["temperature", "demand"]}, {"train": "weather.csv"}),
    "sequence_classification": ({}, {"train": "waveforms.csv"}),
}


@pytest.mark.parametrize("name", NAMES)
def test_task_trains_with_the_model_it_describes(name):
    options, splits = TASK_SETUPS[name]
    task = make(name, options, splits=splits)
    assert isinstance(task.describe(), str) and task.name == name
    m = SequenceModel(input_size=task.input_size, vocab_size=task.vocab_size, output_size=task.output_size,
                      target=task.target, hidden_size=8, seed=0)
    opt = make_optimizer("adam", dict(m.named_parameters()), lr=0.01)
    train: Split = task.data()["train"].take(np.arange(8))
    mask = None
    if task.target == "sequence" and train.lengths is not None:
        mask = sequence_mask(train.lengths, train.inputs.shape[1])
    losses = []
    for _ in range(3):
        out, _, backward = m.forward_train(train.inputs, train.lengths)
        loss, d_out = LOSSES[task.loss](out, train.targets, mask)
        opt.step(backward(d_out))
        losses.append(loss)
    assert losses[-1] < losses[0]
    metrics = task.metrics(m(train.inputs, train.lengths), train.targets, train.lengths)
    assert set(metrics) == set(get_registry().task_spec(name).metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_classification_npz_gaps_are_refused_within_lengths(tmp_path):
    x = np.random.default_rng(0).random((10, 5, 2))
    x[4, 4, 0] = np.nan  # past sequence 4's length: padding, ignored
    x[3, 2, 1] = np.inf
    lengths = np.array([5, 5, 5, 5, 4, 5, 5, 5, 5, 5])
    np.savez(tmp_path / "a.npz", inputs=x, labels=np.array(["a", "b"] * 5), lengths=lengths)
    with pytest.raises(TaskError, match=r"a\.npz: inputs\[3, 2\] is not a finite number"):
        make("sequence_classification", splits={"train": "a.npz"}, base_dir=tmp_path)
    x[3, 2, 1] = 0.5
    np.savez(tmp_path / "a.npz", inputs=x, labels=np.array(["a", "b"] * 5), lengths=lengths)
    assert len(make("sequence_classification", splits={"train": "a.npz"}, base_dir=tmp_path).data()["train"]) > 0


def test_synthetic_data_that_cannot_fit_is_a_task_error_naming_the_split():
    with pytest.raises(TaskError, match=r"task sine: its test split \(100,000,000,000,000 sequences\) does not fit "
                                        r"in memory .* lower task\.options\.num_test") as info:
        make("sine", {"num_train": 4, "num_valid": 2, "num_test": 10**14}).data()
    assert info.value.keys == ("task.options.num_test",)
