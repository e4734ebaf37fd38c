"""An independent writing of the GeMS objective for the tests: the solo model's encode/decode, autograd's
F.cross_entropy and the textbook terms (docs/algorithms.md §2 eq. (1)), against which the library's
objective over the member dimension (`slatectl.pretrain.gems_stack.GeMSStack.terms`) is checked."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slatectl.pretrain.gems import GeMS


def reference_terms(model: GeMS, slates: torch.Tensor, clicks: torch.Tensor, lambda_click: float = 0.5,
                    lambda_KL: float = 1.0, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One model's negative ELBO and its terms (each a mean over the batch); `eps` standard normal noise of
    the latent's shape (None: z = mu)."""
    mu, logvar = model.encode(slates, clicks)
    if eps is None:
        z = mu
    else:
        z = mu + eps * (logvar.exp() if model.reparam_noise == "variance" else (0.5 * logvar).exp())
    item_logits, click_logits = model.decode(z)
    slate_ce = F.cross_entropy(item_logits.reshape(-1, model.num_items), slates.reshape(-1).long())
    click_bce = F.binary_cross_entropy_with_logits(click_logits, clicks.float())
    # The closed form in log-variance (torch.distributions' form through σ² underflows for very negative
    # log-variances, which a large learning rate reaches); tests/test_gems.py checks it against that form.
    kl = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).mean()
    total = slate_ce + lambda_click * click_bce + lambda_KL * kl
    return {"total": total, "slate_ce": slate_ce, "click_bce": click_bce, "kl": kl}
