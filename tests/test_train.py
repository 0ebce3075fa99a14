"""Losses, optimizers, schedules and clipping: torch's semantics (live when torch is importable,
hand-computed values always), and state dicts that survive np.savez / np.load(allow_pickle=False)."""
import math

import numpy as np
import pytest

from lstmkit import SequenceModel
from lstmkit.testing import numeric_gradient
from lstmkit.train import (
    LOSSES, SGD, Adam, AdamW, clip_grad_norm, cross_entropy, make_optimizer, make_scheduler, mse, sequence_mask,
)

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not importable")


def npz_round_trip(state, tmp_path):
    path = tmp_path / "state.npz"
    np.savez(path, **state)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- losses -------------------------------------------------------------------------------
def test_mse_value_gradient_and_mask(rng):
    pred, target = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    loss, grad = mse(pred, target)
    assert loss == pytest.approx(np.mean((pred - target) ** 2))
    np.testing.assert_allclose(grad, numeric_gradient(lambda: mse(pred, target)[0], pred), atol=1e-8)
    mask = sequence_mask([4, 1, 2], 4)
    assert mask.tolist()[1] == [True, False, False, False]
    loss, grad = mse(pred, target, mask)
    assert loss == pytest.approx(np.mean((pred - target)[mask] ** 2))
    assert not grad[~mask].any()
    np.testing.assert_allclose(grad, numeric_gradient(lambda: mse(pred, target, mask)[0], pred), atol=1e-8)
    assert mse(pred.astype(np.float32), target)[1].dtype == np.float32
    with pytest.raises(ValueError, match="mask should have shape"):
        mse(pred, target, np.ones((3, 5), bool))


def test_cross_entropy_value_gradient_and_mask(rng):
    logits = rng.standard_normal((2, 3, 5)) * 3
    ids = rng.integers(0, 5, (2, 3))
    z = logits - logits.max(-1, keepdims=True)
    nll = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, ids[..., None], -1)[..., 0]
    loss, grad = cross_entropy(logits, ids)
    assert loss == pytest.approx(nll.mean())
    np.testing.assert_allclose(grad, numeric_gradient(lambda: cross_entropy(logits, ids)[0], logits), atol=1e-8)
    mask = sequence_mask([3, 1], 3)
    loss, grad = cross_entropy(logits, ids, mask)
    assert loss == pytest.approx(nll[mask].mean()) and not grad[~mask].any()
    assert cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))[0] == pytest.approx(1000.0)  # stable
    assert LOSSES == {"mse": mse, "cross_entropy": cross_entropy}
    with pytest.raises(ValueError, match=r"target ids should lie in 0\.\.4"):
        cross_entropy(logits, ids + 5)


@needs_torch
def test_losses_match_torch(rng):
    logits = rng.standard_normal((6, 4))
    ids = rng.integers(0, 4, 6)
    t = torch.tensor(logits, requires_grad=True)
    torch.nn.functional.cross_entropy(t, torch.tensor(ids)).backward()
    loss, grad = cross_entropy(logits, ids)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(t, torch.tensor(ids)).item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10)
    target = rng.standard_normal((6, 4))
    t = torch.tensor(logits, requires_grad=True)
    torch.nn.functional.mse_loss(t, torch.tensor(target)).backward()
    loss, grad = mse(logits, target)
    assert loss == pytest.approx(torch.nn.functional.mse_loss(t, torch.tensor(target)).item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12)


# -- optimizers ------------------------------------------------------------------------------
OPTIM_CASES = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adamw", dict(lr=0.01)),
    ("adamw", dict(lr=0.02, weight_decay=0.5)),
]
TORCH_OPTIM = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def random_problem(seed):
    rng = np.random.default_rng(seed)
    params = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(5)]
    return params, grads


@needs_torch
@pytest.mark.parametrize("name, options", OPTIM_CASES)
def test_optimizers_match_torch(name, options):
    params, grads = random_problem(0)
    tparams = [torch.tensor(v.copy(), requires_grad=True) for v in params.values()]
    topt = getattr(torch.optim, TORCH_OPTIM[name])(tparams, **options)
    opt = make_optimizer(name, params, **options)
    for step in grads:
        for p, g in zip(tparams, step.values()):
            p.grad = torch.tensor(g)
        topt.step()
        opt.step(step)
        for (key, ours), theirs in zip(params.items(), tparams):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=key)


def test_optimizers_hand_computed():
    p = {"w": np.array([1.0, -2.0])}
    SGD(p, lr=0.1).step({"w": np.array([1.0, 1.0])})
    np.testing.assert_allclose(p["w"], [0.9, -2.1])
    p = {"w": np.array([0.0])}
    opt = SGD(p, lr=1.0, momentum=0.5)
    opt.step({"w": np.array([1.0])})  # buffer = g = 1
    opt.step({"w": np.array([1.0])})  # buffer = 0.5 + 1 = 1.5
    np.testing.assert_allclose(p["w"], [-2.5])
    p = {"w": np.array([0.0])}
    SGD(p, lr=1.0, momentum=0.5, nesterov=True).step({"w": np.array([1.0])})  # g + 0.5·b = 1.5
    np.testing.assert_allclose(p["w"], [-1.5])
    # Adam's first step moves each weight by lr·g/(|g| + eps): m̂ = g, v̂ = g².
    p = {"w": np.array([1.0, 1.0])}
    Adam(p, lr=0.1, eps=0.0).step({"w": np.array([3.0, -0.5])})
    np.testing.assert_allclose(p["w"], [0.9, 1.1])
    # AdamW decays the weight first: w·(1 - lr·wd), then the Adam step.
    p = {"w": np.array([2.0])}
    AdamW(p, lr=0.1, eps=0.0, weight_decay=0.5).step({"w": np.array([4.0])})
    np.testing.assert_allclose(p["w"], [2.0 * 0.95 - 0.1])


def test_optimizer_updates_model_in_place_and_lr_is_settable(rng):
    m = SequenceModel(input_size=2, hidden_size=3, output_size=1, seed=0)
    before = m.state_dict()
    opt = make_optimizer("adam", dict(m.named_parameters()), lr=0.1)
    out, _, backward = m.forward_train(rng.standard_normal((2, 4, 2)).astype(np.float32))
    opt.step(backward(np.ones_like(out)))
    assert all(not np.array_equal(v, before[k]) for k, v in m.named_parameters())
    assert all(v.dtype == np.float32 for v in m.parameters())
    opt.lr = 0.0
    after = m.state_dict()
    opt.step({k: np.ones_like(v) for k, v in m.named_parameters()})
    assert all(np.array_equal(v, after[k]) for k, v in m.named_parameters())


@pytest.mark.parametrize("name, options", OPTIM_CASES)
def test_optimizer_state_dict_round_trip_is_exact(name, options, tmp_path):
    params, grads = random_problem(1)
    copy = {k: v.copy() for k, v in params.items()}
    a = make_optimizer(name, params, **options)
    for g in grads[:3]:
        a.step(g)
    a.lr = 0.005  # e.g. set by a scheduler: restored too
    state = npz_round_trip(a.state_dict(), tmp_path)
    b = make_optimizer(name, {k: v.copy() for k, v in params.items()}, **options)
    b.load_state_dict(state)
    assert b.lr == 0.005 and b.step_count == 3
    for g in grads[3:]:
        a.step(g)
        b.step(g)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in params)
    assert not all(np.array_equal(copy[k], params[k]) for k in params)


def test_optimizer_errors():
    p = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid optimizers: sgd, adam, adamw"):
        make_optimizer("rmsprop", p)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(KeyError, match="unknown parameters: v"):
        SGD(p, lr=0.1).step({"v": np.zeros(2)})
    with pytest.raises(ValueError, match="optimizer state is for 'sgd', this optimizer is 'adam'"):
        Adam(p).load_state_dict(SGD(p, lr=0.1).state_dict())
    SGD(p, lr=0.1).step({})  # no gradient: parameter skipped, as torch skips .grad None
    assert not p["w"].any()


# -- schedulers ---------------------------------------------------------------------------------
SCHED_CASES = [
    ("step", dict(step_size=3, gamma=0.5), "StepLR", dict(step_size=3, gamma=0.5)),
    ("cosine", dict(t_max=5, eta_min=0.01), "CosineAnnealingLR", dict(T_max=5, eta_min=0.01)),
    ("plateau", dict(mode="min", factor=0.5, patience=1, threshold=0.01, min_lr=0.02),
     "ReduceLROnPlateau", dict(mode="min", factor=0.5, patience=1, threshold=0.01, min_lr=0.02)),
    ("plateau", dict(mode="max", factor=0.1, patience=0, cooldown=1), "ReduceLROnPlateau",
     dict(mode="max", factor=0.1, patience=0, cooldown=1)),
]
METRICS = [1.0, 0.9, 0.95, 0.92, 0.91, 0.8, 0.85, 0.86, 0.87, 0.7, 0.75, 0.76]


@needs_torch
@pytest.mark.parametrize("name, options, torch_name, torch_options", SCHED_CASES)
def test_schedulers_match_torch(name, options, torch_name, torch_options):
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    tsched = getattr(torch.optim.lr_scheduler, torch_name)(topt, **torch_options)
    opt = SGD({"w": np.zeros(1)}, lr=0.1)
    sched = make_scheduler(name, opt, **options)
    for metric in METRICS:
        topt.step()
        tsched.step(metric) if name == "plateau" else tsched.step()
        sched.step(metric)
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)


def test_schedulers_hand_computed_and_round_trip(tmp_path):
    opt = SGD({"w": np.zeros(1)}, lr=1.0)
    sched = make_scheduler("step", opt, step_size=2, gamma=0.1)
    lrs = []
    for _ in range(5):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])
    opt = SGD({"w": np.zeros(1)}, lr=1.0)
    sched = make_scheduler("cosine", opt, t_max=4)
    for expected in [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(1, 5)]:
        sched.step()
        assert opt.lr == pytest.approx(expected)
    opt = SGD({"w": np.zeros(1)}, lr=1.0)
    sched = make_scheduler("plateau", opt, patience=1, factor=0.5)
    for metric in [1.0, 1.0, 1.0]:  # best, bad, bad -> 2 bad epochs > patience 1
        sched.step(metric)
    assert opt.lr == 0.5
    state = npz_round_trip(sched.state_dict(), tmp_path)
    twin_opt = SGD({"w": np.zeros(1)}, lr=0.5)
    twin = make_scheduler("plateau", twin_opt, patience=1, factor=0.5)
    twin.load_state_dict(state)
    for metric in [1.0, 1.0, 0.5, 0.6, 0.6]:
        sched.step(metric)
        twin.step(metric)
        assert opt.lr == twin_opt.lr
    none = make_scheduler("none", opt)
    none.step()
    assert opt.lr == twin_opt.lr
    with pytest.raises(ValueError, match="needs the monitored metric"):
        sched.step()
    with pytest.raises(ValueError, match="unknown scheduler 'linear'; valid schedulers: none, step, cosine, plateau"):
        make_scheduler("linear", opt)
    with pytest.raises(TypeError):
        make_scheduler("none", opt, gamma=0.5)


# -- clipping -------------------------------------------------------------------------------------
def test_clip_grad_norm_hand_computed():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose([grads["a"][0], grads["b"][0, 0]], [0.6, 0.8], rtol=1e-6)
    small = {"a": np.array([0.3, 0.4], np.float32)}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], np.array([0.3, 0.4], np.float32))  # untouched below the limit
    with pytest.raises(ValueError, match="max_norm should be a positive number"):
        clip_grad_norm(small, 0)


@needs_torch
def test_clip_grad_norm_matches_torch(rng):
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(tensors, 0.5).item()
    assert clip_grad_norm(grads, 0.5) == pytest.approx(expected, rel=1e-12)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
