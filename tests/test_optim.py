"""Adam and SGD: the first step, a hand computation, state round-trips, bad input."""

import numpy as np
import pytest

from numpy_vae import SGD, Adam
from numpy_vae.optim import NonFiniteGradientError


def test_first_adam_step_moves_each_parameter_by_lr_times_sign_of_g():
    p = {"w": np.array([1.0, -2.0, 3.0, 0.5])}
    g = {"w": np.array([1e-3, -50.0, 2.0, -1e-5])}
    before = p["w"].copy()
    Adam(lr=0.01).step(p, g)
    assert np.allclose(p["w"] - before, -0.01 * np.sign(g["w"]), rtol=1e-2)


def test_three_adam_steps_match_a_hand_computation():
    lr, b1, b2, eps = 0.1, 0.8, 0.9, 1e-8
    w = np.array([0.5, -1.0])
    gs = [np.array([1.0, -2.0]), np.array([0.5, 1.0]), np.array([-1.0, 0.25])]
    opt = Adam(lr=lr, betas=(b1, b2), eps=eps)
    params = {"w": w.copy()}
    m = v = np.zeros(2)
    for t, g in enumerate(gs, start=1):
        opt.step(params, {"w": g})
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        assert np.allclose(params["w"], w, rtol=1e-12, atol=1e-12), t
    assert opt.t == 3


def test_adam_state_round_trips_and_continues_identically():
    rng = np.random.default_rng(0)
    grads = [{"a": rng.normal(size=(2, 3)), "b": rng.normal(size=3)} for _ in range(4)]
    p1 = {"a": np.ones((2, 3)), "b": np.zeros(3)}
    opt1 = Adam(lr=0.05)
    for g in grads[:2]:
        opt1.step(p1, g)
    state = opt1.state_dict()
    p2 = {k: a.copy() for k, a in p1.items()}
    opt2 = Adam(lr=1.0)
    opt2.load_state_dict(state)
    assert opt2.t == 2 and opt2.lr == 0.05
    for g in grads[2:]:
        opt1.step(p1, g)
        opt2.step(p2, g)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    state["m"]["a"][:] = 99  # state_dict returns copies
    assert not np.any(opt1.m["a"] == 99)


def test_sgd_momentum_matches_a_hand_computation_and_round_trips():
    params = {"w": np.array([1.0])}
    opt = SGD(lr=0.1, momentum=0.5)
    opt.step(params, {"w": np.array([2.0])})  # vel 2, w 0.8
    opt.step(params, {"w": np.array([1.0])})  # vel 2, w 0.6
    assert params["w"][0] == pytest.approx(0.6)
    other = SGD()
    other.load_state_dict(opt.state_dict())
    assert other.velocity["w"][0] == pytest.approx(2.0) and other.t == 2


def test_optimizers_reject_mismatched_grads():
    params = {"w": np.zeros(3)}
    for opt in (Adam(), SGD()):
        with pytest.raises(ValueError, match="missing .*'w'.*unexpected .*'v'"):
            opt.step(params, {"v": np.zeros(3)})
        with pytest.raises(ValueError, match=r"grads\['w'\] must have shape \(3,\), got \(4,\)"):
            opt.step(params, {"w": np.zeros(4)})
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        Adam(lr=0)
    with pytest.raises(ValueError, match=r"betas\[1\] must lie in \[0, 1\)"):
        Adam(betas=(0.9, 1.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_gradient_is_refused_and_changes_nothing(bad):
    opt = Adam(lr=0.1)
    params = {"a": np.ones(3), "b": np.zeros(2)}
    opt.step(params, {"a": np.ones(3), "b": np.ones(2)})
    before = {k: p.copy() for k, p in params.items()}
    state = opt.state_dict()
    with pytest.raises(NonFiniteGradientError, match=r"grads\['b'\] holds NaN or Inf"):
        opt.step(params, {"a": np.ones(3), "b": np.array([1.0, bad])})
    assert all(np.array_equal(params[k], before[k]) for k in params)  # not even 'a' moved
    assert opt.t == state["t"] == 1
    assert all(np.array_equal(opt.m[k], state["m"][k]) for k in params)
    assert all(np.array_equal(opt.v[k], state["v"][k]) for k in params)
    with pytest.raises(ValueError):  # NonFiniteGradientError is also a ValueError
        SGD().step(params, {"a": np.full(3, np.nan), "b": np.ones(2)})


def test_adam_without_bias_correction_would_take_a_larger_first_step():
    """What the bias correction buys: the first step is lr * sign(g), not ~3.16 lr."""
    params, g = {"w": np.zeros(2)}, {"w": np.array([0.5, -2.0])}
    Adam(lr=0.01).step(params, g)
    b1, b2 = 0.9, 0.999
    uncorrected = 0.01 * (1 - b1) * np.abs(g["w"]) / (np.sqrt(1 - b2) * np.abs(g["w"]))
    np.testing.assert_allclose(np.abs(params["w"]), 0.01, rtol=1e-6)
    assert np.all(uncorrected > 3 * 0.01)
