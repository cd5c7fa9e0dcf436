"""Every figure of the project; the only module that imports matplotlib.

Functions build ``matplotlib.figure.Figure`` objects directly (no pyplot, no
display needed) and return them; notebooks show them, the job saves them with
``save``. Images are given as (N, H, W) arrays of grey levels in [0, 1].
"""

from statistics import NormalDist

import numpy as np
from matplotlib.figure import Figure

from .checkpoint import atomic_write
from .distributions import GaussianHead, kl_standard_normal_per_dim, std_from_logvar


def save(fig, path, dpi=100):
    """Write ``fig`` to ``path`` (PNG), atomically like a checkpoint, and return the path.

    An interrupted write leaves the old picture (or none), never a truncated PNG.
    """
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
    return path


def tile(images, ncols, pad=1, fill=1.0):
    """Tile (N, H, W) images into one (rows*(H+pad)-pad, ncols*(W+pad)-pad) canvas."""
    n, h, w = images.shape
    nrows = -(-n // ncols)
    canvas = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), fill)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = img
    return canvas


def image_grid(images, ncols=8, title=None, cmap="gray", colorbar=False):
    """A grid of images. Shapes: images (N, H, W)."""
    # With a colour scale the gaps are NaN (blank), so they do not stretch the scale.
    canvas = tile(np.asarray(images, dtype=float), ncols, fill=np.nan if colorbar else 1.0)
    scale = 6 / max(canvas.shape)
    fig = Figure(figsize=(canvas.shape[1] * scale + (1 if colorbar else 0),
                          canvas.shape[0] * scale + 0.4))
    ax = fig.add_subplot()
    im = ax.imshow(canvas, cmap=cmap, vmin=0 if not colorbar else None,
                   vmax=1 if not colorbar else None, interpolation="nearest")
    ax.set_axis_off()
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.04)
    if title:
        ax.set_title(title)
    return fig


def reconstructions(x, x_rec, ncols=10, title="inputs (odd rows) and reconstructions (even rows)"):
    """Inputs and their reconstructions in alternating rows. Shapes: x, x_rec (N, H, W)."""
    n = len(x) - len(x) % ncols or len(x)
    rows = []
    for i in range(0, n, ncols):
        rows += [x[i:i + ncols], x_rec[i:i + ncols]]
    return image_grid(np.concatenate(rows), ncols, title)


def learning_curves(history):
    """Training loss terms and validation ELBO per epoch, from ``train.fit``'s history.

    A run on the k-sample bound L_k records its loss (minus L_k) but no reconstruction
    and KL terms for training, since L_k does not split into them: those two panels
    then show the validation ELBO's terms alone.
    """
    epoch = [r["epoch"] for r in history]
    bound = "train_reconstruction" not in history[0]  # trained on L_k
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 3)
    series = [("L_k (train) and ELBO (validation), nats" if bound else "ELBO (nats)",
               "train_loss", "val_elbo", -1),
              ("reconstruction  E[log p(x|z)]", "train_reconstruction", "val_reconstruction", 1),
              ("KL(q(z|x) || p(z))", "train_kl", "val_kl", 1)]
    for ax, (title, tr, va, sign) in zip(axes, series):
        if tr in history[0]:
            ax.plot(epoch, [sign * r[tr] for r in history], label="train (minus loss)"
                    if sign < 0 else "train")
        ax.plot(epoch, [r[va] for r in history], label="validation")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    return fig


def latent_scatter(mu, color, color_name, kl_per_dim=None):
    """Posterior means in the two most used latent dimensions, coloured by a label or factor.

    The dimensions are those with the largest mean KL (``kl_per_dim``, (Z,)),
    or the first two. Shapes: mu (N, Z), color (N,).
    """
    Z = mu.shape[1]
    dims = [0, 1] if kl_per_dim is None else list(np.argsort(kl_per_dim)[::-1][:2])
    fig = Figure(figsize=(5.5, 4.6))
    ax = fig.add_subplot()
    if Z == 1:
        dims = [0, 0]
    color = np.asarray(color)
    if np.issubdtype(color.dtype, np.integer):  # class labels: one colour each, a legend
        for c in np.unique(color):
            m = color == c
            ax.scatter(mu[m, dims[0]], mu[m, dims[1]], s=4, label=str(c))
        ax.legend(title=color_name, markerscale=3, fontsize=8, loc="upper right")
    else:
        sc = ax.scatter(mu[:, dims[0]], mu[:, dims[1]], c=color, s=4, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=color_name)
    ax.set_xlabel(f"mu[{dims[0]}]")
    ax.set_ylabel(f"mu[{dims[1]}]")
    ax.set_title(f"posterior means, coloured by {color_name}")
    return fig


def prior_grid(n, dims=2):
    """Points of a ``n x n`` grid at the prior's quantiles (1/(2n), ..., 1 - 1/(2n))."""
    q = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    zx, zy = np.meshgrid(q, q[::-1])
    return np.stack([zx.ravel(), zy.ravel()], axis=1)  # (n*n, 2)


def traversal_latents(mu_0, n_steps=9, span=3.0):
    """Latent codes that vary one dimension at a time around ``mu_0``.

    Row j varies dimension j over ``[-span, span]``. Shapes: mu_0 (Z,) -> (Z * n_steps, Z).
    """
    Z = len(mu_0)
    z = np.repeat(mu_0[None, :], Z * n_steps, axis=0)
    values = np.linspace(-span, span, n_steps)
    for j in range(Z):
        z[j * n_steps:(j + 1) * n_steps, j] = values
    return z


def styles_by_label(model, z_styles, as_images):
    """A conditional model's decoder means: one row per style (a latent code ``z``, e.g. an
    example's posterior mean), one column per label. Shapes: z_styles (S, Z)."""
    S, C = len(z_styles), model.num_labels
    z = np.repeat(z_styles, C, axis=0)  # (S C, Z): each style once per label
    y = np.tile(np.arange(C), S)  # (S C,)
    images = as_images(model.sample(S * C, None, z=z, y=y))
    return image_grid(images, C, "one style per row (z of an example), one label per column")


def run_pictures(model, to_images, x, ds, history, out, rng, n_show=40):
    """Write every picture of a run folder and return ``{name: path}``.

    ``x`` (N, D) are model inputs for the examples of ``ds`` (a ``data.Dataset``)
    and ``to_images`` maps decoder means back to grey levels in [0, 1].
    """
    shape = ds.image_shape

    def as_images(a):
        return to_images(a).reshape(-1, *shape)

    paths = {}
    y = ds.labels if model.num_labels else None  # the labels a conditional model reads

    def labels(n, of=None):  # labels for n decoded images: those of the examples, or `of`
        if y is None:
            return None
        return np.full(n, of, dtype=np.int64) if of is not None else y[:n]

    mu, logvar = model.encode(x, y)
    kl_per_dim = kl_standard_normal_per_dim(mu, logvar).mean(axis=0)  # (Z,)

    x_rec = model.sample(n_show, rng, z=mu[:n_show], y=labels(n_show))  # decoder mean at z = mu
    paths["reconstructions"] = save(reconstructions(as_images(x[:n_show]), as_images(x_rec)),
                                    out / "reconstructions.png")
    samples = model.sample(64, rng, y=None if y is None else np.arange(64) % model.num_labels)
    paths["samples"] = save(image_grid(as_images(samples), 8, "decoder means of z ~ N(0, I)"),
                            out / "samples.png")
    if history:
        paths["learning_curves"] = save(learning_curves(history), out / "learning_curves.png")
    colors = [("label", ds.labels)] if ds.labels is not None else []
    colors += [(n, ds.factors[:, j]) for j, n in enumerate(ds.factor_names)]
    for name, c in colors[:1] + [c for c in colors[1:] if c[0] == "scale"]:
        paths[f"latent_{name}"] = save(latent_scatter(mu, c, name, kl_per_dim),
                                       out / f"latent_{name}.png")
    if model.latent_dim == 2:
        n = 15
        manifold = model.sample(n * n, rng, z=prior_grid(n).astype(model.dtype),
                                y=labels(n * n, of=None if y is None else y[0]))
        paths["manifold"] = save(image_grid(as_images(manifold), n,
                                            "decoded prior quantiles"), out / "manifold.png")
    else:
        order = np.argsort(kl_per_dim)[::-1]
        z = traversal_latents(mu[0].astype(model.dtype))
        grid = as_images(model.sample(len(z), rng, z=z, y=labels(
            len(z), of=None if y is None else y[0]))).reshape(model.latent_dim, 9, *shape)
        fig = image_grid(grid[order].reshape(-1, *shape), 9,
                         "latent traversals, one dimension per row (most used first)")
        paths["traversals"] = save(fig, out / "traversals.png")
    if y is not None:
        paths["styles_by_label"] = save(styles_by_label(model, mu[:8], as_images),
                                        out / "styles_by_label.png")
    if isinstance(model.head, GaussianHead):  # a learned variance: draw it
        _, logvar_x = model.decode(mu[:16], labels(16))
        std = std_from_logvar(logvar_x).reshape(-1, *shape)
        paths["decoder_std"] = save(image_grid(std, 8, "decoder standard deviations",
                                               colorbar=True), out / "decoder_std.png")
    return paths
