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


def torch_loss(model, x, eps, beta):
    """The batch mean of -(log P(x|z) - beta KL), written with torch operations."""
    c = model.config
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    act = {"relu": torch.relu, "tanh": torch.tanh, "softplus": torch.nn.functional.softplus,
           "leaky_relu": torch.nn.functional.leaky_relu, "sigmoid": torch.sigmoid}[c.activation]

    def mlp(prefix, h, n_layers):
        for i in range(n_layers):
            h = h @ p[f"{prefix}W{i}"] + p[f"{prefix}b{i}"]
            if i < n_layers - 1:
                h = act(h)
        return h

    x, eps = torch.tensor(x), torch.tensor(eps)
    Z, D = c.latent_dim, c.data_dim
    h = mlp("encoder.", x, model.encoder.n_layers)
    mu, logvar = h[:, :Z], h[:, Z:]
    z = mu + torch.exp(0.5 * logvar) * eps
    out = mlp("decoder.", z, model.decoder.n_layers)
    mean = torch.sigmoid(out[:, :D]) if c.decoder_mean == "sigmoid" else out[:, :D]
    if c.likelihood == "bernoulli":
        rec = -torch.nn.functional.binary_cross_entropy_with_logits(
            out, x, reduction="none").sum(1)
    elif c.likelihood == "gaussian":
        var = c.min_variance + torch.nn.functional.softplus(out[:, D:])
        rec = torch.distributions.Normal(mean, var.sqrt()).log_prob(x).sum(1)
    else:
        rec = torch.distributions.Normal(mean, c.fixed_variance ** 0.5).log_prob(x).sum(1)
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
