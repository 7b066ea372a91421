"""Attacks the gate runs on every candidate. Each takes the model in its constructor and perturbs inputs
with `perturb(x, y, ...)`. Perturbations touch only the columns in `mask` (the numeric features), in the
model's standardized input space, within an L-infinity ball of radius epsilon.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def _grad_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


@dataclass
class FGSMAttack:
    """Fast gradient sign method (Goodfellow, Shlens and Szegedy, 2015):
    x' = x + epsilon * sign(grad_x L(f(x), y)), on the masked columns."""

    model: nn.Module
    name: str = "fgsm"

    def perturb(self, x: np.ndarray, y: np.ndarray, *, epsilon: float, mask: np.ndarray) -> np.ndarray:
        """Adversarial versions of `x` (labels `y`)."""
        xt, yt, m = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask.astype(np.float32))
        return (xt + epsilon * _grad_sign(self.model, xt, yt) * m).detach().numpy()


@dataclass
class PGDAttack:
    """Projected gradient descent (Madry et al., 2018): repeat x_{t+1} = Proj_{||x'-x||_inf <= eps}
    (x_t + alpha * sign(grad_x L(f(x_t), y))), starting at x (no random start, as ART's default)."""

    model: nn.Module
    name: str = "pgd"

    def perturb(self, x: np.ndarray, y: np.ndarray, *, epsilon: float, mask: np.ndarray, steps: int = 20,
                step_size: float = 0.1) -> np.ndarray:
        """Adversarial versions of `x` after `steps` projected steps."""
        x0, yt, m = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask.astype(np.float32))
        adv = x0.clone()
        for _ in range(steps):
            adv = adv + step_size * _grad_sign(self.model, adv, yt) * m
            adv = torch.max(torch.min(adv, x0 + epsilon), x0 - epsilon).detach()
        return adv.numpy()


@dataclass
class GaussianNoise:
    """Random noise N(0, sigma^2) on the masked columns (a robustness check, not an attack)."""

    seed: int = 7
    name: str = "noise"

    def perturb(self, x: np.ndarray, *, sigma: float, mask: np.ndarray) -> np.ndarray:
        """Noisy versions of `x`."""
        rng = np.random.default_rng(self.seed)
        return (x + rng.normal(0, sigma, x.shape).astype(np.float32) * mask).astype(np.float32)


@dataclass
class MissingFeatures:
    """Replace a random share of fields by their training reference value (as a caller omitting them would
    be imputed)."""

    seed: int = 7
    name: str = "missing"

    def perturb(self, x: np.ndarray, *, share: float, slices: list[slice], reference: np.ndarray) -> np.ndarray:
        """`x` with about `share` of each row's fields replaced."""
        rng = np.random.default_rng(self.seed)
        out = x.copy()
        for i in range(len(out)):
            for sl in slices:
                if rng.random() < share:
                    out[i, sl] = reference[sl]
        return out


_HOMOGLYPHS = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "i": "і", "y": "у"}


@dataclass
class TextPerturbation:
    """Typos (adjacent swaps, drops, doubles), word swaps and homoglyphs (Cyrillic look-alikes) on a share
    of words: the character and word attacks for the text family."""

    seed: int = 7
    name: str = "text"

    def perturb(self, texts: list[str], *, rate: float) -> list[str]:
        """Perturbed copies of the texts."""
        rng = random.Random(self.seed)
        return [self._one(t, rate, rng) for t in texts]

    @staticmethod
    def _one(text: str, rate: float, rng: random.Random) -> str:
        words = text.split(" ")
        for i, w in enumerate(words):
            if len(w) < 3 or rng.random() >= rate:
                continue
            kind = rng.choice(("swap", "drop", "double", "homoglyph", "words"))
            j = rng.randrange(len(w) - 1)
            if kind == "swap":
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            elif kind == "drop":
                words[i] = w[:j] + w[j + 1:]
            elif kind == "double":
                words[i] = w[:j] + w[j] + w[j:]
            elif kind == "homoglyph":
                words[i] = "".join(_HOMOGLYPHS.get(ch, ch) if rng.random() < 0.5 else ch for ch in w)
            elif i + 1 < len(words):
                words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
