"""Dense layers, activations and the MLP against central differences (float64)."""

import numpy as np
import pytest
from conftest import GRAD_TOL as TOL
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_vae import layers
from numpy_vae.gradcheck import numerical_gradient, numerical_gradient_array, rel_error


def away_from_kink(rng, shape):
    """Inputs with |x| >= 0.1, so a finite difference never straddles the ReLU kink."""
    x = rng.uniform(0.1, 2.0, size=shape)
    return x * rng.choice([-1.0, 1.0], size=shape)


def test_affine_backward_matches_central_differences():
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(4, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)
    dout = rng.normal(size=(4, 3))
    dx, dW, db = layers.affine_backward(dout, layers.affine_forward(x, W, b)[1])
    assert rel_error(dx, numerical_gradient_array(lambda x: layers.affine_forward(x, W, b)[0],
                                                  x, dout)) < TOL
    assert rel_error(dW, numerical_gradient_array(lambda W: layers.affine_forward(x, W, b)[0],
                                                  W, dout)) < TOL
    assert rel_error(db, numerical_gradient_array(lambda b: layers.affine_forward(x, W, b)[0],
                                                  b, dout)) < TOL


@pytest.mark.parametrize("name", [a for a in layers.ACTIVATIONS])
def test_activation_backward_matches_central_differences(name):
    forward, backward = layers.ACTIVATIONS[name]
    rng = np.random.default_rng(1)
    x = away_from_kink(rng, (3, 4))
    dout = rng.normal(size=(3, 4))
    dx = backward(dout, forward(x)[1])
    num = numerical_gradient_array(lambda x: forward(x)[0], x, dout)
    assert rel_error(dx, num) < TOL, (name, dx, num)


def test_activations_have_their_textbook_values():
    x = np.array([-2.0, -0.5, 0.5, 3.0])
    assert np.array_equal(layers.relu_forward(x)[0], [0, 0, 0.5, 3.0])
    assert np.allclose(layers.leaky_relu_forward(x)[0], [-0.02, -0.005, 0.5, 3.0])
    assert np.allclose(layers.sigmoid(x), 1 / (1 + np.exp(-x)))
    assert np.allclose(layers.softplus(x), np.log1p(np.exp(x)))


@given(st.floats(-1e4, 1e4))
def test_sigmoid_and_softplus_are_finite_and_exact_for_large_inputs(v):
    x = np.array([v])
    s, sp = layers.sigmoid(x), layers.softplus(x)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(sp))
    assert 0 <= s[0] <= 1 and sp[0] >= max(v, 0)
    assert sp[0] - max(v, 0) <= np.log(2) + 1e-12


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "softplus", "leaky_relu"])
def test_mlp_backward_fills_every_parameter_gradient(activation):
    rng = np.random.default_rng(2)
    mlp = layers.MLP((4, 5, 3, 2), activation, rng=rng)
    for p in mlp.params.values():  # non-zero biases too: zeros can hide a wrong backward
        p += 0.3 * rng.normal(size=p.shape)
    x = rng.normal(size=(6, 4))
    dout = rng.normal(size=(6, 2))
    before = {k: p.copy() for k, p in mlp.params.items()}
    mlp.forward(x)
    dx = mlp.backward(dout)
    assert all(np.array_equal(before[k], mlp.params[k]) for k in before), "backward changed params"
    assert mlp.grads.keys() == mlp.params.keys()

    def f():
        return float(np.sum(mlp.forward(x) * dout))

    for k, p in mlp.params.items():
        assert rel_error(mlp.grads[k], numerical_gradient(f, p)) < TOL, k
    assert rel_error(dx, numerical_gradient_array(lambda x: mlp.forward(x), x, dout)) < TOL


def test_init_scales_follow_he_and_glorot():
    rng = np.random.default_rng(3)
    W_he, b = layers.init_dense(1000, 500, "relu", rng)
    W_gl, _ = layers.init_dense(1000, 500, "tanh", rng)
    assert np.all(b == 0)
    assert abs(W_he.std() - np.sqrt(2 / 1000)) < 0.01 * np.sqrt(2 / 1000)
    assert abs(W_gl.std() - np.sqrt(2 / 1500)) < 0.01 * np.sqrt(2 / 1500)
    assert layers.init_dense(3, 2, "tanh", rng, np.float32)[0].dtype == np.float32


def test_mlp_rejects_bad_input_before_computing():
    mlp = layers.MLP((4, 3), rng=np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="before forward"):
        mlp.backward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(any, 4\), got \(2, 5\)"):
        mlp.forward(np.ones((2, 5)))
    with pytest.raises(TypeError, match="x must be a floating-point array, got int64"):
        mlp.forward(np.ones((2, 4), dtype=np.int64))
    # NaN data is refused once, at the model's boundary (test_vae), not rescanned per layer.
    with pytest.raises(ValueError, match="activation must be one of"):
        layers.MLP((4, 3), "swish")
    with pytest.raises(ValueError, match="sizes"):
        layers.MLP((4, 0))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5),
       st.sampled_from(["relu", "tanh", "sigmoid", "softplus", "leaky_relu"]))
def test_mlp_shapes(batch, width_in, width_out, activation):
    mlp = layers.MLP((width_in, 3, width_out), activation, rng=np.random.default_rng(0))
    out = mlp.forward(np.ones((batch, width_in)))
    assert out.shape == (batch, width_out)
    assert mlp.backward(np.ones_like(out)).shape == (batch, width_in)


def test_uniform_init_is_pytorch_linear_default():
    rng = np.random.default_rng(4)
    W, b = layers.init_dense(400, 300, "relu", rng, scheme="uniform")
    bound = 1 / np.sqrt(400)
    assert np.abs(W).max() <= bound and np.abs(b).max() <= bound
    assert abs(W.std() - bound / np.sqrt(3)) < 0.01 * bound  # std of U(-a, a) is a/sqrt(3)
    assert b.std() > 0.5 * bound / np.sqrt(3)  # biases are drawn too
    with pytest.raises(ValueError, match="scheme must be one of"):
        layers.init_dense(3, 2, "relu", rng, scheme="xavier")


def test_mlp_backward_without_dx_gives_the_same_parameter_gradients():
    rng = np.random.default_rng(1)
    mlp = layers.MLP((4, 5, 3), "tanh", rng=rng)
    x, dout = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    mlp.forward(x)
    dx = mlp.backward(dout)
    with_dx = mlp.grads
    mlp.forward(x)
    assert mlp.backward(dout, need_dx=False) is None
    assert dx.shape == x.shape and mlp.grads is not with_dx  # a new dict each backward
    for k in with_dx:
        np.testing.assert_array_equal(mlp.grads[k], with_dx[k])
