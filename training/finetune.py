"""Fine-tuning: teach a trained model new examples (reviewed drawings) without forgetting MNIST.

The training code with other values: a copy of the model, recompiled with a low, decaying learning
rate, the same augmentation pipeline, a few epochs. The caller mixes in an MNIST replay sample
(the `retrain` command does, with FinetuneConfig.replay_size digits), or passes it as `replay`.

    model = export.load(parent_dir)                      # the .keras of the active version
    tuned = finetune(model, x_new, y_new, FinetuneConfig(), replay=replay_sample(...))
    evaluate(tuned, x_test, y_test)                      # {"loss", "accuracy", "confusion", ...}
    export.save(tuned, metrics=..., config=config, out_dir=new_dir)
"""

import keras
import numpy as np
from keras import layers

from predictor.preprocessing import IMAGE_SIZE
from training.augment import make_dataset
from training.config import FinetuneConfig
from training.train import compile_model


def finetune(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    config: FinetuneConfig,
    *,
    replay: tuple[np.ndarray, np.ndarray] | None = None,
    verbose: int = 0,
) -> keras.Model:
    """Return a fine-tuned copy of `model` (which is left untouched) trained on uint8 (N, 28, 28) x and labels y.

    `replay` (x, y), when given, is mixed into the training data. Any softmax temperature baked
    into the model stays as it was.
    """
    keras.utils.set_random_seed(config.seed)
    x = np.asarray(x, dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    y = np.asarray(y).astype(np.int64)
    if replay is not None:
        x = np.concatenate([x, np.asarray(replay[0], dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)])
        y = np.concatenate([y, np.asarray(replay[1]).astype(np.int64)])
    if len(x) == 0:
        raise ValueError("finetune() needs at least one example.")
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    if config.freeze_batchnorm:
        # A frozen BatchNorm layer also runs in inference mode: a few hundred new drawings must not
        # re-estimate the statistics learnt from 60,000 digits.
        for layer in tuned.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    steps = max(1, len(x) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps * config.epochs, alpha=0.05
    )
    compile_model(tuned, learning_rate=schedule, weight_decay=0.0, label_smoothing=config.label_smoothing)
    dataset = make_dataset(x, y, batch_size=config.batch_size, seed=config.seed, augment=config.augment)
    tuned.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, shuffle=False, verbose=verbose)
    return tuned
