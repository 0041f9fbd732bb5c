import numpy as np
import pytest

from training import export
from training.config import FinetuneConfig
from training.data import load_mnist
from training.evaluate import evaluate, predict_probabilities
from training.finetune import between, finetune, training_mix, with_corrections_repeated
from training.model import model_temperature
from training.train import BASE_DIR


@pytest.fixture(scope="module")
def new_style():
    """Digits written mirror-image: a style the shipped model has never seen."""
    (x, y), _ = load_mnist()
    return x[:96, :, ::-1], y[:96]


@pytest.fixture(scope="module")
def base():
    return export.load(BASE_DIR)


def test_finetune_learns_new_examples_and_leaves_the_original_alone(base, new_style):
    x, y = new_style
    weights = [w.copy() for w in base.get_weights()]
    before = evaluate(base, x, y)
    config = FinetuneConfig(epochs=4, batch_size=32, learning_rate=1e-3, augment=None)
    tuned = finetune(base, x, y, config)
    after = evaluate(tuned, x, y)
    assert after["loss"] < before["loss"] and after["accuracy"] > before["accuracy"]
    assert tuned is not base
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), weights))
    assert model_temperature(tuned) == pytest.approx(model_temperature(base))


def test_finetune_mixes_in_replay_and_is_reproducible(base, new_style):
    x, y = new_style
    (x_mnist, y_mnist), _ = load_mnist()
    config = FinetuneConfig(epochs=1, batch_size=32, augment=FinetuneConfig().augment)
    replay = (x_mnist[1000:1064], y_mnist[1000:1064])
    first = finetune(base, x[:32], y[:32], config, replay=replay)
    second = finetune(base, x[:32], y[:32], config, replay=replay)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_finetuned_model_exports_with_parity(base, new_style, tmp_path):
    x, y = new_style
    tuned = finetune(base, x[:32], y[:32], FinetuneConfig(epochs=1, batch_size=32, augment=None))
    metrics = export.save(tuned, metrics={}, config=FinetuneConfig(seed=3), out_dir=tmp_path / "v2", parity_images=x)
    assert metrics["tflite_max_abs_diff"] <= 1e-4
    assert metrics["config"]["learning_rate"] == FinetuneConfig().learning_rate


def share_of_reviewed(config: FinetuneConfig, reviewed: int, replayed: int, batches: int = 20) -> float:
    """Return the share of examples labelled as reviewed (7) in the first batches of a fine-tune's mix."""
    (x_mnist, _), _ = load_mnist()
    mix = training_mix(x_mnist[:reviewed], np.full(reviewed, 7), x_mnist[:replayed], np.full(replayed, 3), config)
    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in mix.take(batches)])
    assert len(labels) == batches * config.batch_size
    return float(np.mean(labels == 7))


def test_each_batch_takes_the_configured_share_of_reviewed_drawings():
    # 40 reviewed drawings against 2,000 replay digits: pooled, they would be 2% of what is seen.
    assert share_of_reviewed(FinetuneConfig(reviewed_share=0.5, batch_size=64), 40, 2000) == pytest.approx(
        0.5, abs=0.06
    )
    assert share_of_reviewed(FinetuneConfig(reviewed_share=0.25, batch_size=64), 40, 2000) == pytest.approx(
        0.25, abs=0.06
    )


def test_a_share_of_zero_pools_reviewed_drawings_with_the_replay():
    assert share_of_reviewed(FinetuneConfig(reviewed_share=0.0, batch_size=64), 400, 1600) == pytest.approx(
        0.2, abs=0.06
    )


@pytest.mark.parametrize(("trainable", "learning"), [("head", {"logits"}), ("top", {"logits", "conv2d_4"})])
def test_trainable_keeps_the_earlier_layers_as_they_were(base, new_style, trainable, learning):
    x, y = new_style
    config = FinetuneConfig(epochs=1, batch_size=32, learning_rate=1e-3, augment=None, trainable=trainable)
    tuned = finetune(base, x, y, config)
    changed = {
        layer.name
        for layer, before in zip(tuned.layers, base.layers)
        if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), before.get_weights()))
    }
    # Names follow the base model's layers (clone_model keeps them); BatchNorm stays frozen either way.
    assert {name.split("_")[0] for name in changed} <= {"logits", "conv2d"}
    assert "logits" in changed
    convolutions = sorted(name for name in changed if name.startswith("conv2d"))
    assert len(convolutions) == (1 if trainable == "top" else 0)


def test_an_unknown_trainable_is_refused(base, new_style):
    x, y = new_style
    with pytest.raises(ValueError, match="trainable must be one of all, top, head"):
        finetune(base, x, y, FinetuneConfig(epochs=1, trainable="middle"))


def test_watched_drawings_are_measured_after_each_epoch(base, new_style):
    x, y = new_style
    config = FinetuneConfig(epochs=2, batch_size=32, augment=None)
    tuned = finetune(base, x[:64], y[:64], config, watch=(x[64:], y[64:]))
    history = tuned.history.history
    assert len(history["val_accuracy"]) == 2 and len(history["loss"]) == 2
    assert all(0 <= value <= 1 for value in history["val_accuracy"])


def test_distilled_replay_keeps_the_parents_answers_not_the_replay_labels(base, new_style):
    # Replay digits all labelled 0: learnt from their labels they would teach the model to answer 0;
    # distilled from the parent, they teach it to answer as before.
    x, y = new_style
    (x_mnist, y_mnist), _ = load_mnist()
    digits, truth = x_mnist[2000:2256], y_mnist[2000:2256]
    wrong = (digits, np.zeros_like(truth))
    accuracy = {}
    for distill in (0.0, 1.0):
        config = FinetuneConfig(epochs=2, batch_size=32, learning_rate=1e-3, augment=None, distill=distill)
        accuracy[distill] = evaluate(finetune(base, x[:32], y[:32], config, replay=wrong), digits, truth)["accuracy"]
    assert accuracy[1.0] >= 0.95
    assert accuracy[0.0] < accuracy[1.0] - 0.2


def test_the_drawings_the_parent_misreads_count_as_often_as_configured(base, new_style):
    x, y = new_style
    misread = predict_probabilities(base, x).argmax(axis=1) != y
    assert 0 < misread.sum() < len(y)  # mirrored digits: some read right, some not
    repeated_x, repeated_y = with_corrections_repeated(base, x, y, 4)
    assert len(repeated_y) == len(y) + 3 * misread.sum()
    np.testing.assert_array_equal(repeated_x[: len(x)], x)
    extra = repeated_x[len(x) :]
    for image in x[misread]:
        assert sum(np.array_equal(image, other) for other in extra) == 3
    assert not any(np.array_equal(image, other) for image in x[~misread] for other in extra)
    assert with_corrections_repeated(base, x, y, 1)[0] is x


def test_a_model_between_parent_and_fine_tune_has_weights_on_the_line_between_them(base, new_style):
    x, y = new_style
    tuned = finetune(base, x, y, FinetuneConfig(epochs=1, batch_size=32, learning_rate=1e-3, augment=None))
    parent_weights, tuned_weights = base.get_weights(), tuned.get_weights()
    for weight in (0.0, 0.7, 1.0):
        blended = between(base, tuned, weight)
        assert blended is not base and blended is not tuned
        for old, new, kept in zip(parent_weights, tuned_weights, blended.get_weights(), strict=True):
            np.testing.assert_allclose(kept, (1 - weight) * old + weight * new, rtol=1e-6, atol=1e-7)
        assert model_temperature(blended) == pytest.approx(model_temperature(base))
    assert blended.history is tuned.history
    np.testing.assert_allclose(predict_probabilities(blended, x), predict_probabilities(tuned, x), atol=1e-6)
    np.testing.assert_allclose(
        predict_probabilities(between(base, tuned, 0.0), x), predict_probabilities(base, x), atol=1e-6
    )
    # The two it lies between are left as they were.
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), parent_weights))
    assert all(np.array_equal(a, b) for a, b in zip(tuned.get_weights(), tuned_weights))
    with pytest.raises(ValueError, match="between 0 and 1"):
        between(base, tuned, 1.5)
