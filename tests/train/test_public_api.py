"""The public surface of ws_train changes only on purpose."""

from __future__ import annotations

import importlib

import ws_train

PUBLIC = {
    "ws_train": [
        "CIFAR100DataModule", "CIFAR10DataModule", "ClassificationDataModule", "DelayedEpsilonShrinking",
        "DigitsDataModule", "FashionMNISTDataModule", "ImageFolderDataModule", "ProgressiveShrinking",
        "SandwichRule", "ShrinkingPolicy",
        "SubNetTask", "SubNetValidation", "SuperNetModule",
    ],
    "ws_train.schedules": [
        "BIGNAS_FINAL_LR_FRACTION", "BIGNAS_LR_DECAY", "BIGNAS_LR_DECAY_EPOCHS", "DEFAULT_RAMP_EPOCHS",
        "OFA_PHASE_EPOCHS", "OFA_PHASE_LR", "OFA_PHASE_WARMUP", "DelayedShrinkingSchedule", "bignas_lr",
        "cosine_lr", "delayed_shrinking_schedule", "epsilon_beta", "epsilon_ramp", "progressive_shrinking_lr",
        "progressive_shrinking_phases", "warmup_switch_epoch", "warmup_switch_step",
    ],
    "ws_train.sampling": ["LOSSES", "ROLES", "SubNetTask", "restrict_space", "sandwich_tasks", "subnet_generator",
                          "subnet_seed"],
    "ws_train.losses": ["distillation_loss", "soft_targets"],
    "ws_train.policies": ["GRADIENT_AGGREGATIONS", "OFA_PHASES", "DelayedEpsilonShrinking", "ProgressiveShrinking",
                          "SandwichRule", "ShrinkingPhase", "ShrinkingPolicy", "aggregate_gradients",
                          "zero_init_last_bn_"],
    "ws_train.module": ["SuperNetModule", "build_supernet", "run_length"],
    "ws_train.validation": ["SubNetValidation", "calibration_loader"],
    "ws_train.data": ["CIFAR100DataModule", "CIFAR10DataModule", "ClassificationDataModule", "DigitsDataModule",
                      "FashionMNISTDataModule", "ImageFolderDataModule", "TensorImageDataset", "load_digits_images"],
    "ws_train.cli": ["DATA_ALIASES", "POLICY_ALIASES", "SuperNetCLI", "main", "normalize_args"],
}


def test_all_is_pinned_and_importable():
    for name, expected in PUBLIC.items():
        module = importlib.import_module(name)
        assert sorted(module.__all__) == sorted(expected), name
        for attr in module.__all__:
            assert hasattr(module, attr), f"{name}.{attr}"
    assert ws_train.__version__ == "0.1.0"
