"""The KD loss for any training loop: `kd_loss(z_s, z_t, y, ...)` and the recipe behind it,
as `vwwfast distill` computes them (this is vwwfast.train.losses under a public name)."""

from vwwfast.train.losses import (
    SETTINGS,
    TERMS,
    WEIGHTS,
    KDRecipe,
    alpha_at,
    kd_loss,
    loss_and_means,
    margin_at,
)

__all__ = ["kd_loss", "KDRecipe", "SETTINGS", "TERMS", "WEIGHTS", "alpha_at", "margin_at",
           "loss_and_means"]
