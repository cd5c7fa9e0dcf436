"""The checker itself: it must pass correct gradients and catch wrong ones."""

import numpy as np
import pytest

from numpy_vae import VAE, layers
from numpy_vae.gradcheck import (
    check_backward,
    check_model_gradients,
    cmp,
    numerical_gradient,
    numerical_gradient_array,
    rel_error,
)


def test_numerical_gradient_of_a_known_function():
    x = np.array([0.3, -1.2, 2.0])
    num = numerical_gradient(lambda: float(np.sum(np.sin(x) * x)), x)
    assert rel_error(num, np.cos(x) * x + np.sin(x)) < 1e-9
    assert np.array_equal(x, [0.3, -1.2, 2.0])  # restored after perturbation


def test_rel_error_scales_and_handles_zeros():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error([1.0, 0.0], [1.0, 1e-9]) == pytest.approx(1e-9)
    with pytest.raises(ValueError, match="same shape"):
        rel_error(np.zeros(2), np.zeros(3))


def test_the_check_catches_a_deliberately_wrong_backward(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    dout = rng.normal(size=(3, 4))

    def wrong_tanh_backward(dout, cache):
        return dout * (1 - cache)  # forgot to square tanh

    num = numerical_gradient_array(lambda x: layers.tanh_forward(x)[0], x, dout)
    assert rel_error(layers.tanh_backward(dout, np.tanh(x)), num) < 1e-8
    assert rel_error(wrong_tanh_backward(dout, np.tanh(x)), num) > 1e-2

    model = VAE(5, (4,), 2, activation="tanh", rng=rng)
    for p in model.params.values():
        p += 0.2 * rng.normal(size=p.shape)
    xb, eps = rng.uniform(size=(3, 5)), rng.standard_normal((3, 2))
    assert max(check_model_gradients(model, xb, eps).values()) < 1e-6
    monkeypatch.setitem(layers.ACTIVATIONS, "tanh", (layers.tanh_forward, wrong_tanh_backward))
    errors = check_model_gradients(model, xb, eps)
    assert errors["encoder.W0"] > 1e-2 and errors["decoder.W0"] > 1e-2
    assert errors["decoder.W1"] < 1e-6  # the head's weights do not pass through tanh'


def test_subsampled_check_of_a_bigger_model():
    rng = np.random.default_rng(1)
    model = VAE(30, (40,), 5, rng=rng)
    x, eps = rng.uniform(size=(4, 30)), rng.standard_normal((4, 5))
    errors = check_model_gradients(model, x, eps, max_entries=20, rng=rng)
    assert max(errors.values()) < 1e-6


def test_float32_is_refused():
    model = VAE(5, (4,), 2, dtype=np.float32, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="float64"):
        check_model_gradients(model, np.zeros((2, 5), np.float32), np.zeros((2, 2), np.float32))


def test_cmp_prints_one_line_and_returns_the_verdict(capsys):
    assert cmp("same", np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert not cmp("off", np.array([1.0, 2.0]), np.array([1.0, 2.1]))
    assert cmp("monte carlo", 1.02, 1.0, atol=0.05)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "exact: True" in lines[0] and "approx: True" in lines[0]
    assert "exact: False" in lines[1] and "approx: False" in lines[1]
    assert "maxdiff: 1.0e-01" in lines[1]


def test_check_backward_passes_a_right_and_names_a_wrong_input():
    rng = np.random.default_rng(3)
    x, W, b = rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
    dout = rng.normal(size=(5, 3))
    out, cache = layers.affine_forward(x, W, b)
    dx, dW, db = layers.affine_backward(dout, cache)

    def f(x, W, b):
        return layers.affine_forward(x, W, b)[0]

    inputs = {"x": x, "W": W, "b": b}
    errors = check_backward(f, inputs, {"x": dx, "W": dW, "b": db}, dout, rng)
    assert max(errors.values()) < 1e-8
    errors = check_backward(f, inputs, {"x": dx, "W": 2 * dW, "b": db}, dout, rng)
    assert errors["W"] > 0.1 and errors["x"] < 1e-8 and errors["b"] < 1e-8
    with pytest.raises(TypeError, match="float64"):
        check_backward(f, {**inputs, "W": W.astype(np.float32)}, {"W": dW}, dout, rng)
