"""ws-train: once-for-all SuperNet training as Lightning callbacks.

Add one shrinking-policy callback to a ``lightning.Trainer`` and train a SuperNet whose SubNets are
all accurate: :class:`DelayedEpsilonShrinking` (DεpS — full model first, then every SubNet with an
ε learning-rate ramp and inplace distillation), :class:`ProgressiveShrinking` (OFA) or
:class:`SandwichRule` (BigNAS). :class:`SubNetValidation` measures SubNets with recalibrated BN.

Example::

    >>> import lightning as L
    >>> from ws_train import DelayedEpsilonShrinking, DigitsDataModule, SubNetValidation, SuperNetModule
    >>> trainer = L.Trainer(max_epochs=4, callbacks=[DelayedEpsilonShrinking(), SubNetValidation()])
    >>> trainer.fit(SuperNetModule("ws_ofa_mbv3_035_32", num_classes=10), DigitsDataModule())  # doctest: +SKIP
"""

from ._version import __version__ as __version__
from .data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    ClassificationDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
)
from .module import SuperNetModule
from .policies import DelayedEpsilonShrinking, ProgressiveShrinking, SandwichRule, ShrinkingPolicy
from .sampling import SubNetTask
from .validation import SubNetValidation

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "DelayedEpsilonShrinking",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "ProgressiveShrinking",
    "SandwichRule",
    "ShrinkingPolicy",
    "SubNetTask",
    "SubNetValidation",
    "SuperNetModule",
]
