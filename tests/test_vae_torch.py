"""The whole ``loss_and_grads`` against PyTorch autograd, in float64, for every likelihood.

A reference comparison in the manner of micrograd: the same weights, data and
noise go through the same model written with torch operations, and autograd's
gradients must equal the hand-derived ones. Skipped when PyTorch is absent
(CI installs it).
"""

import numpy as np
import pytest
from conftest import make_small_model

torch = pytest.importorskip("torch")


def torch_model(model):
    """The model's parameters as leaf tensors, and ``net(prefix, h)`` running one MLP."""
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    act = {"relu": torch.relu, "tanh": torch.tanh, "softplus": torch.nn.functional.softplus,
           "leaky_relu": torch.nn.functional.leaky_relu,
           "sigmoid": torch.sigmoid}[model.config.activation]
    layers = {"encoder.": model.encoder.n_layers, "decoder.": model.decoder.n_layers}

    def net(prefix, h):
        for i in range(layers[prefix]):
            h = h @ p[f"{prefix}W{i}"] + p[f"{prefix}b{i}"]
            if i < layers[prefix] - 1:
                h = act(h)
        return h

    return p, net


def torch_log_px(c, out, x):
    """log P(x|z) summed over pixels from the decoder output ``out`` (..., D or 2D)."""
    D = c.data_dim
    mean = torch.sigmoid(out[..., :D]) if c.decoder_mean == "sigmoid" else out[..., :D]
    if c.likelihood == "bernoulli":
        return -torch.nn.functional.binary_cross_entropy_with_logits(
            out, x, reduction="none").sum(-1)
    if c.likelihood == "gaussian":
        var = c.min_variance + torch.nn.functional.softplus(out[..., D:])
        return torch.distributions.Normal(mean, var.sqrt()).log_prob(x).sum(-1)
    return torch.distributions.Normal(mean, c.fixed_variance ** 0.5).log_prob(x).sum(-1)


def torch_loss(model, x, eps, beta):
    """The batch mean of -(log P(x|z) - beta KL), written with torch operations."""
    c = model.config
    p, net = torch_model(model)
    x, eps = torch.tensor(x), torch.tensor(eps)
    Z = c.latent_dim
    h = net("encoder.", x)
    mu, logvar = h[:, :Z], h[:, Z:]
    z = mu + torch.exp(0.5 * logvar) * eps
    rec = torch_log_px(c, net("decoder.", z), x)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)),
        torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    loss = (beta * kl - rec).mean()
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in p.items()}


@pytest.mark.parametrize("likelihood, decoder_mean", [
    ("bernoulli", "identity"), ("gaussian", "identity"), ("gaussian", "sigmoid"),
    ("gaussian-fixed", "identity"), ("gaussian-fixed", "sigmoid")])
@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "softplus"])
def test_loss_and_grads_equal_pytorch_autograd(likelihood, decoder_mean, activation):
    model, rng = make_small_model(likelihood, activation, min_variance=0.05,
                                  fixed_variance=0.7, decoder_mean=decoder_mean)
    x = rng.uniform(size=(5, 6))
    eps = rng.standard_normal((5, 3))
    loss, grads, _ = model.loss_and_grads(x, eps=eps, beta=0.7)
    ref_loss, ref_grads = torch_loss(model, x, eps, beta=0.7)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert grads.keys() == ref_grads.keys()
    for k, g in grads.items():
        np.testing.assert_allclose(g, ref_grads[k], rtol=1e-10, atol=1e-13, err_msg=k)


def torch_iwae_loss(model, x, eps, y=None):
    """Minus the batch mean of L_k = logsumexp_i log w_i - log k, written with torch operations.

    ``log w_i = log P(x|z_i) + log P(z_i) - log q(z_i|x)``, each density from
    torch.distributions; a conditional model's networks read ``[., onehot(y)]``.
    """
    c = model.config
    p, net = torch_model(model)
    normal = torch.distributions.Normal

    def with_labels(a, labels):  # labels (..., ) int -> [a, onehot(labels)]
        if labels is None:
            return a
        onehot = torch.nn.functional.one_hot(labels, c.num_labels).to(a.dtype)
        return torch.cat([a, onehot], dim=-1)

    x, eps = torch.tensor(x), torch.tensor(eps)  # (B, D), (B, k, Z)
    y = None if y is None else torch.tensor(y)
    B, k, Z = eps.shape
    h = net("encoder.", with_labels(x, y))
    mu, std = h[:, None, :Z], torch.exp(0.5 * h[:, None, Z:])  # (B, 1, Z)
    z = mu + std * eps  # (B, k, Z)
    y_k = None if y is None else y[:, None].expand(B, k)
    out = net("decoder.", with_labels(z, y_k))  # (B, k, .)
    log_px = torch_log_px(c, out, x[:, None, :].expand(B, k, c.data_dim))  # (B, k)
    log_pz = normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)  # (B, k)
    log_qz = normal(mu, std).log_prob(z).sum(-1)  # (B, k)
    bound = torch.logsumexp(log_px + log_pz - log_qz, dim=1) - np.log(k)  # (B,)
    loss = -bound.mean()
    loss.backward()
    return loss.item(), bound.detach().numpy(), {k: t.grad.numpy() for k, t in p.items()}


@pytest.mark.parametrize("likelihood, decoder_mean", [
    ("bernoulli", "identity"), ("gaussian", "identity"), ("gaussian", "sigmoid"),
    ("gaussian-fixed", "identity"), ("gaussian-fixed", "sigmoid")])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("k, num_labels", [(1, 0), (4, 0), (4, 3)])
def test_iwae_loss_and_grads_equal_pytorch_autograd(likelihood, decoder_mean, activation, k,
                                                    num_labels):
    model, rng = make_small_model(likelihood, activation, min_variance=0.05,
                                  fixed_variance=0.7, decoder_mean=decoder_mean,
                                  num_labels=num_labels)
    x = rng.uniform(size=(5, 6))
    eps = rng.standard_normal((5, k, 3))
    y = rng.integers(0, num_labels, 5) if num_labels else None
    loss, grads, terms = model.iwae_loss_and_grads(x, k, eps=eps, y=y)
    ref_loss, ref_bound, ref_grads = torch_iwae_loss(model, x, eps, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(terms["bound"], ref_bound, rtol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        np.testing.assert_allclose(g, ref_grads[name], rtol=1e-10, atol=1e-13, err_msg=name)
