"""The paper's methods as data: each is a combination of a few independent ingredients.

A method names how a batch is built (``pairing``: no mixing, a random partner from the batch as in
Mixup, or a nearest neighbour as in SMOTE-Mix and Neighbor-Mix), how the label share lam_y follows
from lam_x (``label_rule``, see ``core.mixing.LABEL_RULES``), which loss is used (``loss``), when
class-balanced weights switch on (``weighting``) and whether the training set is oversampled with
SMOTE before training (``oversample``), and how a weighted batch loss is reduced (``reduction``).
Two baselines change what happens from the switch epoch (``TrainConfig.drw_epoch``, 160 of 200 on
CIFAR) on: M2m (Kim et al. 2020) draws class-balanced batches (``sampler``) and translates majority
seeds into minority samples in every batch (``translation``, ``core.m2m``); DeepSMOTE (Dablain et al.
2022) trains on the real and DeepSMOTE-made images, balanced (``synthesis``, ``core.deepsmote``). Both
need models trained before the run (``stages``, ``core.stages``).
The training loop reads these fields; it never branches on the method's name.

Reduction, as in the authors' code (imbalanced-DL): Algorithm 1 divides the batch loss by the batch
size M (``batch_mean``), and so do its DRW, CB and Mixup/Remix/MAMix-DRW trainers
(``CrossEntropyLoss(weight=w, reduction='none')(...).mean()``). Only LDAM-DRW divides by the summed
weights (``weighted_mean``, ``F.cross_entropy(weight=w)``, as in Cao et al.). After the DRW switch the
two differ by the factor sum_c n_c w_c / N: about 5.9 at CIFAR-10-LT-100, 13.2 at LT-300.
"""

from __future__ import annotations

from dataclasses import dataclass

PAIRINGS = ("none", "batch", "same_class_nn", "any_nn")
WEIGHTINGS = ("none", "drw", "cb")
LOSSES = ("ce", "ldam")
REDUCTIONS = ("batch_mean", "weighted_mean")
SAMPLERS = ("shuffle", "class_balanced")
TRANSLATIONS = ("none", "m2m")
SYNTHESES = ("none", "deepsmote")


@dataclass(frozen=True)
class Method:
    pairing: str = "none"
    label_rule: str = "mixup"
    loss: str = "ce"
    weighting: str = "none"
    oversample: bool = False
    reduction: str = "batch_mean"  # the default of TrainConfig.reduction for this method
    # From the switch epoch on: how an epoch visits the training set ("class_balanced": N draws with
    # replacement, weights 1 / n_y, M2m's over-sampling loader), whether batches are translated (M2m),
    # and whether the set becomes the real plus synthetic one, balanced and unaugmented (DeepSMOTE).
    sampler: str = "shuffle"
    translation: str = "none"
    synthesis: str = "none"
    stages: tuple[str, ...] = ()  # models trained before the run, by stage name (core.stages)

    def __post_init__(self) -> None:
        # The training loop branches on these values, so a misspelt one would silently take another's branch.
        for name, allowed in (("pairing", PAIRINGS), ("loss", LOSSES), ("weighting", WEIGHTINGS),
                              ("reduction", REDUCTIONS), ("sampler", SAMPLERS), ("translation", TRANSLATIONS),
                              ("synthesis", SYNTHESES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: got {getattr(self, name)!r}; allowed: {list(allowed)}")

    @property
    def mixes(self) -> bool:
        return self.pairing != "none"


METHODS: dict[str, Method] = {
    "erm": Method(),
    "drw": Method(weighting="drw"),
    "cb": Method(weighting="cb"),
    "ldam": Method(loss="ldam", reduction="weighted_mean"),
    "ldam_drw": Method(loss="ldam", weighting="drw", reduction="weighted_mean"),
    "smote": Method(oversample=True),
    "mixup": Method(pairing="batch"),
    "mixup_drw": Method(pairing="batch", weighting="drw"),
    "remix": Method(pairing="batch", label_rule="remix"),
    "remix_drw": Method(pairing="batch", label_rule="remix", weighting="drw"),
    "mamix": Method(pairing="batch", label_rule="mamix"),
    "mamix_drw": Method(pairing="batch", label_rule="mamix", weighting="drw"),
    "mamix_remix": Method(pairing="batch", label_rule="mamix_remix"),
    "mamix_remix_drw": Method(pairing="batch", label_rule="mamix_remix", weighting="drw"),
    # eq. 7-8: the partner is a same-class neighbour, so y_j = y_i and the label is hard.
    "smote_mix": Method(pairing="same_class_nn"),
    "smote_mix_drw": Method(pairing="same_class_nn", weighting="drw"),
    # eq. 9-10: the partner is a neighbour of any class; soft label with lam_y = lam_x.
    "neighbor_mix": Method(pairing="any_nn"),
    "neighbor_mix_drw": Method(pairing="any_nn", weighting="drw"),
    # Baselines of Tables 9-11, 13, 14, as their official code runs them (no re-weighting).
    "m2m": Method(sampler="class_balanced", translation="m2m", stages=("m2m_generator",)),
    "deepsmote": Method(synthesis="deepsmote", stages=("deepsmote_autoencoder",)),
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method: unknown method {name!r}; allowed: {sorted(METHODS)}") from None
