"""The fast training path computes the same numbers as the plain, readable one.

Flat parameter and gradient buffers, gradients written in place, the skipped
input gradient of the encoder, the flat (and threaded) Adam update and the
cheaper Bernoulli likelihood are checked here against the textbook
composition of the forward/backward functions and against per-key Adam.
"""

import numpy as np
import pytest

from numpy_vae import VAE, Adam, layers
from numpy_vae import distributions as dist
from numpy_vae.optim import flat_buffer


def model_and_batch(dtype=np.float64, hidden=(7, 5), data_dim=9, latent_dim=3, B=6, seed=0):
    rng = np.random.default_rng(seed)
    model = VAE(data_dim, hidden, latent_dim, activation="relu", dtype=dtype, rng=rng)
    model.flat_params += (0.2 * rng.normal(size=model.flat_params.size)).astype(dtype)
    x = rng.uniform(size=(B, data_dim)).astype(dtype)
    eps = rng.standard_normal((B, latent_dim)).astype(dtype)
    return model, x, eps


def reference_loss_and_grads(model, x, eps, beta=1.0):
    """``loss_and_grads`` written as the plain chain of pure functions (new arrays everywhere)."""
    def mlp_forward(net, h):
        caches = []
        for i in range(net.n_layers):
            w, b = net.names(i)
            h, affine_cache = layers.affine_forward(h, model.params[w], model.params[b])
            act_cache = None
            if i < net.n_layers - 1:
                h, act_cache = layers.relu_forward(h)
            caches.append((affine_cache, act_cache))
        return h, caches

    def mlp_backward(net, dh, caches, grads):
        for i in reversed(range(net.n_layers)):
            affine_cache, act_cache = caches[i]
            if i < net.n_layers - 1:
                dh = layers.relu_backward(dh, act_cache)
            dh, dW, db = layers.affine_backward(dh, affine_cache)
            w, b = net.names(i)
            grads[w], grads[b] = dW, db
        return dh

    B, Z = x.shape[0], model.latent_dim
    h, enc_caches = mlp_forward(model.encoder, x)
    mu, logvar = h[:, :Z], h[:, Z:]
    std = np.exp(0.5 * logvar)
    z = mu + std * eps
    logits, dec_caches = mlp_forward(model.decoder, z)
    rec = (x * logits - np.logaddexp(0, logits)).sum(axis=1)
    kl = 0.5 * (np.exp(logvar) - 1 - logvar + mu * mu).sum(axis=1)
    loss = np.mean(beta * kl - rec)
    grads = {}
    dlogits = (1 / (1 + np.exp(-logits)) - x) / B
    dz = mlp_backward(model.decoder, dlogits, dec_caches, grads)
    dmu = dz + beta * mu / B
    dlogvar = 0.5 * dz * std * eps + 0.5 * beta * (np.exp(logvar) - 1) / B
    mlp_backward(model.encoder, np.concatenate([dmu, dlogvar], axis=1), enc_caches, grads)
    return loss, grads


# ----------------------------------------------------------------------------- the model


def test_params_are_views_of_one_flat_buffer_in_order():
    model, _, _ = model_and_batch()
    assert flat_buffer(model.params) is model.flat_params
    assert model.flat_params.size == model.num_params
    assert all(p.base is model.flat_params for p in model.params.values())
    model.flat_params[:] = 0.5  # the buffer and the dict are the same numbers
    assert all(np.all(p == 0.5) for p in model.params.values())


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_loss_and_grads_equal_the_plain_composition(beta):
    model, x, eps = model_and_batch()
    loss, grads = model.loss_and_grads(x, eps=eps, beta=beta)
    ref_loss, ref_grads = reference_loss_and_grads(model, x, eps, beta)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    assert list(grads) == list(model.params)
    for k, g in grads.items():
        assert g.shape == model.params[k].shape
        np.testing.assert_allclose(g, ref_grads[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_grads_tile_a_fresh_flat_buffer_each_call():
    model, x, eps = model_and_batch()
    _, g1 = model.loss_and_grads(x, eps=eps)
    flat = flat_buffer(g1)
    assert flat is not None and flat.shape == model.flat_params.shape
    kept = {k: g.copy() for k, g in g1.items()}
    _, g2 = model.loss_and_grads(2 * x / 3, eps=eps)  # a second call must not overwrite g1
    assert flat_buffer(g2) is not flat
    assert all(np.array_equal(g1[k], kept[k]) for k in g1)


def test_float32_model_keeps_float32_through_the_fast_path():
    model, x, eps = model_and_batch(np.float32)
    assert model.flat_params.dtype == np.float32
    loss, grads = model.loss_and_grads(x, eps=eps)
    ref_loss, ref_grads = reference_loss_and_grads(model, x, eps)
    assert loss == pytest.approx(float(ref_loss), rel=1e-5)
    for k, g in grads.items():
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, ref_grads[k], rtol=1e-4, atol=1e-6, err_msg=k)
    opt = Adam()
    opt.step(model.params, grads)
    assert all(a.dtype == np.float32 for a in (*opt.m.values(), *opt.v.values()))


def test_mlp_backward_without_dx_and_into_given_arrays():
    rng = np.random.default_rng(1)
    mlp = layers.MLP((4, 5, 3), "tanh", rng=rng)
    x, dout = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    mlp.forward(x)
    dx = mlp.backward(dout)
    plain = {k: g.copy() for k, g in mlp.grads.items()}
    out = {k: np.full_like(p, np.nan) for k, p in mlp.params.items()}
    mlp.forward(x)
    assert mlp.backward(dout, need_dx=False, out=out) is None
    assert dx.shape == x.shape
    for k in plain:
        assert mlp.grads[k] is out[k]
        np.testing.assert_array_equal(out[k], plain[k])


# ----------------------------------------------------------------------------- Bernoulli


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
def test_bernoulli_matches_logaddexp_and_the_textbook_sigmoid(scale):
    rng = np.random.default_rng(2)
    logits = scale * rng.normal(size=(5, 40))
    x = np.where(rng.uniform(size=logits.shape) < 0.3, rng.uniform(size=logits.shape),
                 (rng.uniform(size=logits.shape) < 0.5).astype(float))
    logp, cache = dist.bernoulli_log_likelihood(x, logits)
    np.testing.assert_allclose(logp, (x * logits - np.logaddexp(0, logits)).sum(axis=1),
                               rtol=1e-13, atol=1e-13 * logits.shape[1])
    dlogp = rng.normal(size=5)
    sig = np.where(logits >= 0, 1 / (1 + np.exp(-np.abs(logits))),
                   np.exp(-np.abs(logits)) / (1 + np.exp(-np.abs(logits))))
    np.testing.assert_allclose(dist.bernoulli_log_likelihood_backward(dlogp, cache),
                               dlogp[:, None] * (x - sig), rtol=1e-15, atol=1e-300)


# ----------------------------------------------------------------------------- Adam


def separate_copies(arrays):
    return {k: a.copy() for k, a in arrays.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flat_adam_equals_per_key_adam_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    model, x, _ = model_and_batch(dtype)
    params_flat, params_keys = model.params, separate_copies(model.params)
    opt_flat, opt_keys = Adam(lr=0.01), Adam(lr=0.01)
    for _ in range(4):
        _, grads = model.loss_and_grads(x, rng=rng)
        assert flat_buffer(grads) is not None
        opt_flat.step(params_flat, grads)  # one update of the flat buffers
        opt_keys.step(params_keys, separate_copies(grads))  # one update per key
    assert opt_flat.m["encoder.W0"].base is not None  # it did take the flat path
    for k in params_flat:
        np.testing.assert_array_equal(params_flat[k], params_keys[k], err_msg=k)
        np.testing.assert_array_equal(opt_flat.m[k], opt_keys.m[k], err_msg=k)
        np.testing.assert_array_equal(opt_flat.v[k], opt_keys.v[k], err_msg=k)


def test_adam_state_dict_keeps_its_form_on_the_flat_path_and_round_trips():
    rng = np.random.default_rng(5)
    model, x, _ = model_and_batch()
    opt = Adam(lr=0.01)
    grads_seq = [model.loss_and_grads(x, rng=rng)[1] for _ in range(4)]
    grads_seq = [separate_copies(g) for g in grads_seq]  # fixed gradients, replayed twice

    def as_flat(g):  # the same gradients laid out in one buffer, as loss_and_grads gives them
        flat, views, start = np.concatenate([a.ravel() for a in g.values()]), {}, 0
        for k, a in g.items():
            views[k] = flat[start:start + a.size].reshape(a.shape)
            start += a.size
        return views

    for g in grads_seq[:2]:
        opt.step(model.params, as_flat(g))
    state = opt.state_dict()
    assert set(state) == {"lr", "betas", "eps", "t", "m", "v"} and state["t"] == 2
    assert list(state["m"]) == list(model.params)
    assert all(state["m"][k].shape == p.shape and state["m"][k].base is None
               for k, p in model.params.items())  # copies, not views of the live buffer
    # Continue on the flat path (original) and on a restored optimizer + copied params.
    restored, params2 = Adam(lr=1.0), separate_copies(model.params)
    restored.load_state_dict(state)
    for g in grads_seq[2:]:
        opt.step(model.params, as_flat(g))
        restored.step(params2, g)  # per-key path from loaded per-key state
    for k in params2:
        np.testing.assert_array_equal(model.params[k], params2[k], err_msg=k)


def test_per_key_state_moves_into_the_flat_buffers():
    """Per-key steps, then flat steps, equal per-key steps throughout."""
    rng = np.random.default_rng(6)
    model, x, _ = model_and_batch()
    params2 = separate_copies(model.params)
    mixed, per_key = Adam(lr=0.01), Adam(lr=0.01)
    for s in range(4):
        _, grads = model.loss_and_grads(x, rng=rng)
        g_copy = separate_copies(grads)
        mixed.step(model.params, g_copy if s < 2 else grads)  # per key twice, then flat
        per_key.step(params2, g_copy)
    for k in params2:
        np.testing.assert_array_equal(model.params[k], params2[k], err_msg=k)


def test_assigning_a_new_array_to_a_key_falls_back_to_the_per_key_path():
    rng = np.random.default_rng(7)
    model, x, _ = model_and_batch()
    model.params["decoder.b1"] = model.params["decoder.b1"].copy()  # cut off the buffer
    assert flat_buffer(model.params) is None
    params2 = separate_copies(model.params)
    opt, ref = Adam(lr=0.01), Adam(lr=0.01)
    for _ in range(2):
        _, grads = model.loss_and_grads(x, rng=rng)
        opt.step(model.params, grads)
        ref.step(params2, separate_copies(grads))
    for k in params2:
        np.testing.assert_array_equal(model.params[k], params2[k], err_msg=k)


def test_flat_buffer_refuses_what_does_not_tile_one_buffer_in_order():
    flat = np.arange(10.0)
    assert flat_buffer({"a": flat[:4].reshape(2, 2), "b": flat[4:]}) is flat
    assert flat_buffer({"b": flat[4:], "a": flat[:4]}) is None  # wrong order
    assert flat_buffer({"a": flat[:4], "b": flat[5:]}) is None  # a gap
    assert flat_buffer({"a": flat[:4], "b": flat[4:9]}) is None  # does not reach the end
    assert flat_buffer({"a": flat[:4], "b": np.arange(6.0)}) is None  # another array
    assert flat_buffer({"a": flat[::2]}) is None  # not contiguous
    assert flat_buffer({"a": np.zeros(3)}) is None  # owns its data
    assert flat_buffer({}) is None
