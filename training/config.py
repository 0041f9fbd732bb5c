"""Frozen configurations for training and fine-tuning; every knob has a default."""

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation applied to every training batch; each part can be switched off."""

    rotation: bool = True
    max_rotation_degrees: float = 12.0
    shear: bool = True
    max_shear: float = 0.2
    scale: bool = True
    max_scale: float = 0.1  # relative; the site already scales every drawing to a 20 px box
    translate: bool = True
    max_translate_pixels: float = 1.5  # the site centres by centre of mass, so only a little is left
    thickness: bool = True
    min_thickness: float = -0.8  # -1 = fully eroded, 0 = unchanged, 1 = one 3x3 dilation, 2 = two
    max_thickness: float = 1.2
    elastic: bool = False  # off by default: see the ablation in the notebook (section 11)
    elastic_alpha_pixels: float = 1.0  # standard deviation of the coarse displacement field
    probability: float = 0.9  # share of images that get augmented at all


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; written into metrics.json beside the model."""

    seed: int = 1
    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    dropout: float = 0.25
    widths: tuple[int, ...] = (32, 32, 64, 64, 128)
    validation_size: int = 5000  # the last images of MNIST train, never trained on
    train_limit: int = 0  # 0 = all of MNIST train minus the validation slice
    synthetic_size: int = 24000  # canvas-style renders of training digits mixed into training
    canvas_val_size: int = 5000  # canvas-style renders of the validation slice
    calibrate: bool = True  # fit a softmax temperature on half of the validation data
    parity_size: int = 1000  # MNIST test images used to compare Keras and TFLite
    workers: int = 2  # processes rendering synthetic drawings
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None = no augmentation

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready plain values."""
        return _plain(asdict(self))


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning a trained model on new labelled drawings; the same ideas with gentler values."""

    seed: int = 1
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 2e-4  # peak; decays to near zero over the run
    replay_size: int = 5000  # MNIST training images mixed in so the model does not forget
    label_smoothing: float = 0.0
    freeze_batchnorm: bool = True  # keep the base model's normalisation statistics: new data is small
    reviewed_share: float = 0.0  # share of each batch taken from the reviewed drawings; 0 = pooled with the replay
    corrections: int = 1  # how many times a reviewed drawing the parent misreads counts (1 = like any other)
    augment_reviewed: bool = True  # augment the reviewed drawings too (with a share above 0; the replay always is)
    distill: float = 0.0  # weight of the parent's answers in the replay digits' targets (0 = their labels only)
    trainable: str = "all"  # which layers learn: "all", "top" (last convolution and classifier) or "head"
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None = no augmentation

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready plain values."""
        return _plain(asdict(self))


def config_from_dict(cls: type, values: dict[str, Any]):
    """Return a `cls` config built from a (possibly partial) dict such as metrics.json's "config"."""
    known = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in values.items() if k in known}
    if isinstance(kwargs.get("augment"), dict):
        kwargs["augment"] = AugmentConfig(**kwargs["augment"])
    if isinstance(kwargs.get("widths"), list):
        kwargs["widths"] = tuple(kwargs["widths"])
    return cls(**kwargs)


def override(config, **changes):
    """Return a copy of a config with the given fields changed (None values are ignored)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
