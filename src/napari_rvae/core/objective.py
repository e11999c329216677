"""What one optimisation step minimises: the negative ELBO, plus, for a class
latent (jrvae, ssrvae), the classifier term and a class-balance penalty.

The classifier term is Kingma et al.'s M2 term, written as Pyro's own
semi-supervised VAE example writes it: a model/guide pair
(:meth:`~napari_rvae.core.models.RVAE.classify`, ``classify_guide``) whose
loss is scaled by ``poutine.scale``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from .models import RVAE

# Weight of the classifier term, per patch of the batch, against the batch's summed ELBO
# (Kingma's 0.1 N left labelled patches at chance here): docs/science.md#training-constants.
CLASSIFIER_WEIGHT = 100.0
# Labelled patches the classifier term sees each step (a random subset beyond).
CLASSIFIER_BATCH = 256
# jrvae: weight (per patch) of KL(mean class posterior || uniform); without it one class
# takes every patch: docs/science.md#training-constants.
BALANCE_WEIGHT = 100.0


class Objective:
    """The loss of one step on the patches ``idx`` of ``x_all`` (normalised, flattened).

    ``labels``: codes per patch (-1 unknown) or None. ``targets``: the classes the
    class head is taught (the similarity graph's, see core/graph_classes.py, or the
    labels), -1 where none. The classifier term covers the patches with a target
    at *every* step, not only those in the batch: with 10 labels among 1,000
    patches a labelled patch would otherwise steer the head once per epoch.
    """

    def __init__(
        self,
        model: RVAE,
        x_all: torch.Tensor,
        labels: torch.Tensor | None,
        targets: torch.Tensor | None,
        gen: torch.Generator,
    ):
        self.model, self.x_all, self.labels, self.gen = model, x_all, labels, gen
        self.n_classes = model.config.n_classes
        self.enum = model.config.class_latent
        self.elbo = TraceEnum_ELBO(max_plate_nesting=1) if self.enum else TraceMeanField_ELBO()
        self.classify_elbo = Trace_ELBO()
        has_targets = self.enum and targets is not None
        self.targets = targets
        self.labelled = torch.nonzero(targets >= 0).flatten() if has_targets else None
        # jrvae without targets: the batch's mean class posterior is held near uniform.
        self.balanced = self.enum and labels is None and self.labelled is None and BALANCE_WEIGHT > 0

    def __call__(self, idx: torch.Tensor, kl_scale: float) -> torch.Tensor:
        xb = self.x_all[idx]
        if not self.enum:
            yb = F.one_hot(self.labels[idx], self.n_classes).to(xb.dtype) if self.labels is not None else None
            return self.elbo.differentiable_loss(self.model.model, self.model.guide, xb, yb, kl_scale)
        loss = self._class_latent_elbo(xb, None if self.labels is None else self.labels[idx], kl_scale)
        if self.labelled is not None and self.labelled.numel():
            loss = loss + self._classifier_term(xb.shape[0])
        return loss

    def _class_latent_elbo(self, xb, yb, kl_scale) -> torch.Tensor:
        """Unlabelled patches marginalise the class by enumeration; labelled ones observe it.
        Without labels (jrvae) the batch's mean class posterior is held near uniform."""
        model = self.model
        if yb is None:
            loss = self.elbo.differentiable_loss(model.model, model.guide, xb, None, kl_scale)
            if self.balanced:
                q = torch.softmax(model.encoder(xb)[2], -1).mean(0)
                loss = loss + self._balance_term(q, xb.shape[0])
            return loss
        loss = xb.new_zeros(())
        known = yb >= 0
        if (~known).any():
            loss = loss + self.elbo.differentiable_loss(model.model, model.guide, xb[~known], None, kl_scale)
        if known.any():
            yk = F.one_hot(yb[known], self.n_classes).to(xb.dtype)
            with warnings.catch_warnings():  # the class is observed here: nothing to enumerate, as intended
                warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites", UserWarning)
                loss = loss + self.elbo.differentiable_loss(model.model, model.guide, xb[known], yk, kl_scale)
        return loss

    def _classifier_term(self, batch: int) -> torch.Tensor:
        """Mean cross-entropy of the class head on (a sample of) the patches with a target,
        weighted per patch of the batch: the batch's ELBO is summed over patches and pixels."""
        pick = self._classifier_pick()
        return self._classifier_loss(pick, CLASSIFIER_WEIGHT * batch / pick.numel())

    def _classifier_pick(self) -> torch.Tensor:
        """The patches with a target the classifier term sees this step: all, or a random subset."""
        pick = self.labelled
        if pick.numel() > CLASSIFIER_BATCH:
            pick = pick[torch.randperm(pick.numel(), generator=self.gen)[:CLASSIFIER_BATCH].to(pick.device)]
        return pick

    def _classifier_loss(self, pick: torch.Tensor, weight: float) -> torch.Tensor:
        """The class head's cross-entropy summed over the patches ``pick``, times ``weight``."""
        scaled = poutine.scale(self.model.classify, scale=weight)
        return self.classify_elbo.differentiable_loss(
            scaled, self.model.classify_guide, self.x_all[pick], self.targets[pick]
        )

    def _balance_term(self, q: torch.Tensor, batch: int) -> torch.Tensor:
        """KL(mean class posterior ``q`` || uniform), weighted per patch of the batch."""
        return BALANCE_WEIGHT * batch * (q * torch.log(q.clamp_min(1e-12) * self.n_classes)).sum()

    def reported(self, loss: torch.Tensor) -> torch.Tensor:
        """The step's loss as the loss curve counts it (the batch's, summed over its patches)."""
        return loss.detach()
