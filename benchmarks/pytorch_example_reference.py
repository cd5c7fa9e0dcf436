"""The PyTorch example's VAE, trained as the example trains it, for the README's results table.

github.com/pytorch/examples, ``vae/main.py``: 784-400-20 with ReLU, a sigmoid
Bernoulli decoder on grey-level MNIST, loss = summed BCE + KL over the batch,
Adam lr 1e-3, batch 128, shuffled, 10 epochs. Its "test set loss" is the summed
loss over the 10,000 test images (one sampled z each) divided by 10,000.

This script rewrites that model (it is not copied) and prints the test loss
after every epoch for each seed, and the mean over seeds after the last epoch,
as JSON on the last line. Compare with numpy_vae's preset::

    numpy-vae train --preset pytorch-example --seed S   # history.csv: val_elbo = -test loss

Usage: NUMPY_VAE_DATA=/path/to/data python benchmarks/pytorch_example_reference.py --seeds 0 1 2
Needs PyTorch (CPU build): pip install torch
"""

import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from numpy_vae.data import load_dataset, to_unit_interval


class ExampleVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21, self.fc22 = nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def summed_loss(p, x, mu, logvar):
    bce = F.binary_cross_entropy(p, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kl


def run(seed, epochs, train, test):
    torch.manual_seed(seed)
    model = ExampleVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(train)).split(128):
            x = train[idx]
            opt.zero_grad()
            loss = summed_loss(*_out(model, x))
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            total = sum(summed_loss(*_out(model, test[i:i + 1000])).item()
                        for i in range(0, len(test), 1000))
        losses.append(total / len(test))
        print(f"seed {seed} epoch {epoch + 1}: test loss {losses[-1]:.3f} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
    return losses


def _out(model, x):
    p, mu, logvar = model(x)
    return p, x, mu, logvar


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, test = (torch.from_numpy(to_unit_interval(load_dataset("mnist", split).images))
                   for split in ("train", "test"))
    finals = [run(s, args.epochs, train, test)[-1] for s in args.seeds]
    print(json.dumps({"torch": torch.__version__, "seeds": args.seeds, "epochs": args.epochs,
                      "test_loss": finals, "mean": float(np.mean(finals))}))


if __name__ == "__main__":
    main()
