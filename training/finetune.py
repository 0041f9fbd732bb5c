"""Fine-tuning: teach a trained model new examples (reviewed drawings) without forgetting MNIST.

The training code with other values: a copy of the model, recompiled with a low, decaying learning
rate, the same augmentation pipeline, a few epochs. The caller passes an MNIST replay sample as
`replay` (the `retrain` command does, with FinetuneConfig.replay_size digits). By default the
reviewed drawings are pooled with it; FinetuneConfig.reviewed_share > 0 instead draws that share of
every batch from the reviewed drawings (docs/retraining.md measures both). `between(parent, tuned, w)`
then gives a model whose weights lie w of the way from the parent's (the model that was fine-tuned)
to the fine-tuned ones, which keeps most of what the fine-tune learnt at a fraction of what it cost MNIST.

    model = export.load(parent_dir)                      # the .keras of the version retrain starts from
    tuned = finetune(model, x_new, y_new, FinetuneConfig(), replay=replay_sample(...))
    evaluate(tuned, x_test, y_test)                      # {"loss", "accuracy", "confusion", ...}
    export.save(tuned, metrics=..., config=config, out_dir=new_dir)
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from predictor.inference import NUM_CLASSES
from predictor.preprocessing import IMAGE_SIZE
from training.augment import make_dataset
from training.config import FinetuneConfig
from training.evaluate import predict_probabilities
from training.train import compile_model

# Which layers learn, by FinetuneConfig.trainable: every layer, or only the last convolution block and
# the classifier (the earlier blocks find strokes, which a new hand shares with MNIST).
TRAINABLE = ("all", "top", "head")


def finetune(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    config: FinetuneConfig,
    *,
    replay: tuple[np.ndarray, np.ndarray] | None = None,
    watch: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 0,
) -> keras.Model:
    """Return a fine-tuned copy of `model` (which is left untouched) trained on uint8 (N, 28, 28) x and labels y.

    `replay` (x, y), when given, is mixed into the training data. `watch` (x, y), when given, is
    measured after each epoch and nothing else: its loss and accuracy join the per-epoch record
    (`tuned.history.history`, as "val_loss" and "val_accuracy"), and no choice depends on them.
    Any softmax temperature baked into the model stays as it was.
    """
    keras.utils.set_random_seed(config.seed)
    x, y = _examples(x, y)
    x, y = with_corrections_repeated(model, x, y, config.corrections)
    replay_x, replay_y = _examples(*replay) if replay is not None else (x[:0], y[:0])
    if len(x) + len(replay_x) == 0:
        raise ValueError("finetune() needs at least one example.")
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    _freeze(tuned, config)
    steps = max(1, (len(x) + len(replay_x)) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps * config.epochs, alpha=0.05
    )
    distil = config.distill > 0 and len(replay_x) > 0
    if distil:
        # The replay digits teach what the parent answered, not just their label: the parent's whole
        # judgement (which digits a 7 resembles, how sure) is what the fine-tune must not forget.
        parent = predict_probabilities(model, replay_x)
        replay_targets = (1 - config.distill) * _one_hot(replay_y) + config.distill * parent
        y, replay_y = _one_hot(y), replay_targets.astype(np.float32)
    compile_model(
        tuned,
        learning_rate=schedule,
        weight_decay=0.0,
        label_smoothing=config.label_smoothing,
        soft_targets=distil,
    )
    dataset = training_mix(x, y, replay_x, replay_y, config)
    validation = None
    if watch is not None and len(watch[1]):
        watch_x, watch_y = _examples(*watch)
        validation = (watch_x[..., None].astype(np.float32), _one_hot(watch_y) if distil else watch_y)
    tuned.fit(
        dataset,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,
        verbose=verbose,
    )
    return tuned


def between(parent: keras.Model, tuned: keras.Model, weight: float) -> keras.Model:
    """Return a new model whose weights are `weight` x tuned's + (1 - weight) x parent's (both left untouched).

    `tuned` must be a fine-tune of `parent` (same layers): the two lie in one basin of the loss, and the
    straight line between them first keeps what the fine-tune learnt and only then returns what it cost
    (weight-space ensembling, "WiSE-FT"; docs/retraining.md measures it). BatchNorm statistics, frozen
    by the fine-tune, are the same in both. The fit's per-epoch record (`history`) comes along.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be between 0 and 1, not {weight:g}.")
    blended = keras.models.clone_model(tuned)
    blended.set_weights(
        [(1 - weight) * old + weight * new for old, new in zip(parent.get_weights(), tuned.get_weights(), strict=True)]
    )
    blended.history = getattr(tuned, "history", None)
    return blended


def with_corrections_repeated(
    model: keras.Model, x: np.ndarray, y: np.ndarray, times: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return x and y with every example `model` misreads there `times` times instead of once.

    The corrections are what a reviewer taught: among a few hundred reviews of a hand the model
    mostly reads right, they are the few that say what it gets wrong.
    """
    if times <= 1 or len(x) == 0:
        return x, y
    wrong = np.flatnonzero(predict_probabilities(model, x).argmax(axis=1) != y)
    extra = np.repeat(wrong, times - 1)
    return np.concatenate([x, x[extra]]), np.concatenate([y, y[extra]])


def training_mix(
    x: np.ndarray, y: np.ndarray, replay_x: np.ndarray, replay_y: np.ndarray, config: FinetuneConfig
) -> tf.data.Dataset:
    """Return the endless batches of a fine-tune: reviewed drawings and replay digits, in the configured shares.

    With `reviewed_share` 0, or either part empty, the two are simply pooled, each example as likely as
    any other. Otherwise every batch takes about that share of its examples from the reviewed drawings.
    """
    share = config.reviewed_share
    if share <= 0 or len(x) == 0 or len(replay_x) == 0:
        pooled_x, pooled_y = np.concatenate([x, replay_x]), np.concatenate([y, replay_y])
        return make_dataset(pooled_x, pooled_y, batch_size=config.batch_size, seed=config.seed, augment=config.augment)
    # Examples, not batches, are sampled from the two streams, so the share holds within each batch.
    reviewed = _examples_stream(x, y, config, seed=config.seed, augment=config.augment_reviewed)
    replayed = _examples_stream(replay_x, replay_y, config, seed=config.seed + 1)
    mixed = tf.data.Dataset.sample_from_datasets([reviewed, replayed], [share, 1 - share], seed=config.seed)
    return mixed.batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _examples_stream(
    x: np.ndarray, y: np.ndarray, config: FinetuneConfig, *, seed: int, augment: bool = True
) -> tf.data.Dataset:
    """Return an endless stream of single (pixels, label) examples of x and y, augmented unless told not to."""
    batch = min(config.batch_size, len(x))
    return make_dataset(x, y, batch_size=batch, seed=seed, augment=config.augment if augment else None).unbatch()


def _freeze(model: keras.Model, config: FinetuneConfig) -> None:
    """Mark the layers that must not learn in this fine-tune as not trainable."""
    if config.trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, not {config.trainable!r}.")
    convolutions = [i for i, layer in enumerate(model.layers) if isinstance(layer, layers.Conv2D)]
    first_learning = {"all": 0, "top": convolutions[-1], "head": convolutions[-1] + 1}[config.trainable]
    for i, layer in enumerate(model.layers):
        if i < first_learning:
            layer.trainable = False
        # A frozen BatchNorm layer also runs in inference mode: a few hundred new drawings must not
        # re-estimate the statistics learnt from 60,000 digits.
        if config.freeze_batchnorm and isinstance(layer, layers.BatchNormalization):
            layer.trainable = False


def _one_hot(y: np.ndarray) -> np.ndarray:
    """Return float32 (N, 10) one-hot rows of integer labels."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(y, dtype=np.int64)]


def _examples(x: np.ndarray, y) -> tuple[np.ndarray, np.ndarray]:
    """Return x as uint8 (N, 28, 28) and y as int64 (N,)."""
    return (
        np.asarray(x, dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
        np.asarray(y).astype(np.int64).reshape(-1),
    )
