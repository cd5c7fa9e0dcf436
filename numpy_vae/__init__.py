"""numpy_vae: a Variational Autoencoder in pure NumPy, every gradient derived by hand.

The pieces follow the lecture (see README): ``layers`` (dense layers and
activations), ``distributions`` (reparameterization, KL, likelihoods), ``vae``
(the model and its lower bound), ``optim`` (Adam, SGD) and ``gradcheck``.
"""

__version__ = "0.1.0"

from .optim import SGD, Adam
from .vae import VAE

__all__ = ["VAE", "Adam", "SGD", "__version__"]
