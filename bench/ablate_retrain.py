"""Ablation of the fine-tune behind `manage.py retrain`, on style-shift hands (bench/hands.py), in-process.

Run by hand: python bench/ablate_retrain.py [--hands a,b] [--variants x,y] [--sequence a,b]
For each hand: 600 "reviewed" drawings (one in five of them held out by drawing id, as retrain does)
and 1,000 new drawings of the same hand, rendered from MNIST *training* digits, are preprocessed as
the site preprocesses a stored drawing. Each variant fine-tunes the shipped model from its Keras file
on the training part of the reviewed drawings plus the MNIST replay, exactly as `retrain` calls
training.finetune, and is scored on the 1,000 new drawings (share of the base model's errors removed),
on the gate's held-out part, and on MNIST test (overall and worst digit). The numbers are what the
ablation table in docs/retraining.md was made from. --sequence a,b compares, after hand a's run,
adding hand b's reviews: fine-tuning the active version (a's result) against the base model.
"""

import argparse
import dataclasses
import sys
import time
import uuid
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

BASE_MODEL = PROJECT_ROOT / "training" / "artifacts" / "base"
REVIEWED, NEW = 600, 1000
REVIEWED_DIGITS = range(40_000, 50_000)  # MNIST training digits the reviewed drawings are drawn from
NEW_DIGITS = range(50_000, 60_000)  # and the new drawings the result is judged on

# name -> FinetuneConfig changes (the defaults of today's FinetuneConfig are the starting point); "weight" is
# not one: it serves the model that far from the parent's weights to the fine-tune's (training.finetune.between).
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "pooled (share 0)": {"reviewed_share": 0.0},
    "share 0.25": {"reviewed_share": 0.25},
    "share 0.35": {"reviewed_share": 0.35},
    "share 0.5": {"reviewed_share": 0.5},
    "share 0.75": {"reviewed_share": 0.75},
    "lr 1e-4": {"learning_rate": 1e-4},
    "lr 5e-4": {"learning_rate": 5e-4},
    "lr 1e-3": {"learning_rate": 1e-3},
    "lr 2e-3": {"learning_rate": 2e-3},
    "epochs 3": {"epochs": 3},
    "epochs 8": {"epochs": 8},
    "epochs 12": {"epochs": 12},
    "no augmentation": {"augment": None},
    "top layers only": {"trainable": "top"},
    "classifier only": {"trainable": "head"},
    "BatchNorm learns": {"freeze_batchnorm": False},
    "replay 2000": {"replay_size": 2000},
    "replay 10000": {"replay_size": 10000},
    "batch 128": {"batch_size": 128},
    "reviewed not augmented": {"augment_reviewed": False},
    "distill 0.5": {"distill": 0.5},
    "distill 1": {"distill": 1.0},
    "corrections x5": {"corrections": 5},
    "corrections x10": {"corrections": 10},
    "corrections x20": {"corrections": 20},
    "share 0.5 + corrections x5": {"reviewed_share": 0.5, "corrections": 5},
    "share 0.5 weight 0.8": {"reviewed_share": 0.5, "weight": 0.8},
    "share 0.5 weight 0.7": {"reviewed_share": 0.5, "weight": 0.7},
    "share 0.5 weight 0.5": {"reviewed_share": 0.5, "weight": 0.5},
    "pooled weight 0.7": {"reviewed_share": 0.0, "weight": 0.7},
}


@dataclasses.dataclass(frozen=True)
class HandData:
    """One hand's reviewed drawings (train and held-out part, as retrain splits them) and new drawings."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    heldout_x: np.ndarray
    heldout_y: np.ndarray
    new_x: np.ndarray
    new_y: np.ndarray


def hand_data(name: str, x_train: np.ndarray, y_train: np.ndarray, *, seed: int = 7) -> HandData:
    """Return a hand's drawings as the site's 28x28 inputs (cached in the temporary folder)."""
    import tempfile

    from predictor.preprocessing import PreprocessingError, preprocess
    from training.retraining import split_by_id

    cache = Path(tempfile.gettempdir()) / f"ablate-{name}-{seed}.npz"
    if not cache.exists():
        from hands import HANDS, PLAIN

        rng = np.random.default_rng(seed)
        parts = {}
        for part, digits, size in (("reviewed", REVIEWED_DIGITS, REVIEWED), ("new", NEW_DIGITS, NEW)):
            picked = np.sort(rng.choice(np.array(digits), size, replace=False))
            pngs = {**HANDS, PLAIN.name: PLAIN}[name].render(x_train[picked], y_train[picked], seed=seed + len(part))
            pixels, labels = [], []
            for png, label in zip(pngs, y_train[picked]):
                try:
                    pixels.append(preprocess(png))
                except PreprocessingError:
                    continue
                labels.append(label)
            parts[f"{part}_x"], parts[f"{part}_y"] = np.stack(pixels).astype(np.uint8), np.array(labels)
        ids = [str(uuid.UUID(int=int(v))) for v in rng.integers(0, 2**63, len(parts["reviewed_y"]))]
        train, heldout = split_by_id(ids)
        np.savez(cache, train=train, heldout=heldout, **parts)
    with np.load(cache) as data:
        train, heldout = data["train"], data["heldout"]
        return HandData(
            name,
            data["reviewed_x"][train],
            data["reviewed_y"][train],
            data["reviewed_x"][heldout],
            data["reviewed_y"][heldout],
            data["new_x"],
            data["new_y"],
        )


def accuracy(model, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Return (accuracy, per-digit accuracy) of a Keras model."""
    from training.evaluate import predict_probabilities

    predicted = predict_probabilities(model, x).argmax(axis=1)
    right = predicted == y
    return float(right.mean()), np.array([right[y == d].mean() for d in range(10)])


def run(base, hands: list[HandData], config, mnist, *, weight: float = 1.0) -> dict:
    """Return the figures of one fine-tune from `base` on the training parts of `hands`, taken `weight` of the way."""
    from training.finetune import between, finetune
    from training.retraining import replay_sample

    (x_mnist, y_mnist), (x_test, y_test) = mnist
    replay = replay_sample(x_mnist, y_mnist, config.replay_size, seed=config.seed)
    x = np.concatenate([hand.train_x for hand in hands])
    y = np.concatenate([hand.train_y for hand in hands])
    epochs = epoch_scores(hands)
    started = time.perf_counter()
    tuned = finetune(base, x, y, config, replay=replay, callbacks=[epochs])
    seconds = time.perf_counter() - started - epochs.seconds
    if weight < 1:
        tuned = between(base, tuned, weight)
    mnist_accuracy, per_digit = accuracy(tuned, x_test, y_test)
    return {
        "model": tuned,
        "seconds": seconds,
        "mnist": mnist_accuracy,
        "per_digit": per_digit,
        "new": {hand.name: accuracy(tuned, hand.new_x, hand.new_y)[0] for hand in hands},
        "heldout": {hand.name: accuracy(tuned, hand.heldout_x, hand.heldout_y)[0] for hand in hands},
        # Early stopping, had it been used: the epoch best on the gate's held-out part, and the new drawings then.
        "early": epochs.early_stopping(),
    }


def epoch_scores(hands: list[HandData]):
    """Return a Keras callback that scores the hands after each epoch (its time is left out of the fit's)."""
    import keras

    class EpochScores(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.heldout, self.new, self.seconds = [], [], 0.0

        def on_epoch_end(self, epoch, logs=None):
            started = time.perf_counter()
            self.heldout.append(np.mean([accuracy(self.model, h.heldout_x, h.heldout_y)[0] for h in hands]))
            self.new.append({h.name: accuracy(self.model, h.new_x, h.new_y)[0] for h in hands})
            self.seconds += time.perf_counter() - started

        def early_stopping(self) -> tuple[int, dict]:
            """Return (epoch, new-drawing accuracies) of the first epoch best on the gate's held-out part."""
            best = int(np.argmax(self.heldout))
            return best + 1, self.new[best]

    return EpochScores()


def removed(before: float, after: float) -> float:
    """Return the share of the errors before that are gone after."""
    return (after - before) / (1 - before) if before < 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hands", default="", help="comma-separated hand names, or plain (default: all of bench/hands.HANDS)"
    )
    parser.add_argument("--variants", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--set", action="append", default=[], help="change a default for every variant: NAME=VALUE")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; figures are their mean")
    parser.add_argument("--sequence", help="two hands a,b: after a's fine-tune, add b's reviews")
    options = parser.parse_args()

    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digitsite.settings")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hands import HANDS

    from training import export
    from training.config import FinetuneConfig
    from training.data import load_mnist

    defaults = FinetuneConfig(**{k: _value(v) for k, v in (item.split("=", 1) for item in options.set)})
    mnist = load_mnist()
    (x_train, y_train), (x_test, y_test) = mnist
    names = options.hands.split(",") if options.hands else list(HANDS)
    hands = {name: hand_data(name, x_train, y_train) for name in names}
    base = export.load(BASE_MODEL)
    base_mnist, base_digits = accuracy(base, x_test, y_test)
    base_new = {name: accuracy(base, hand.new_x, hand.new_y)[0] for name, hand in hands.items()}
    print(f"base model: MNIST test {base_mnist:.2%}; " + ", ".join(f"{n} {a:.1%}" for n, a in base_new.items()))
    print(f"defaults: {defaults}")
    seeds = [int(s) for s in options.seeds.split(",")]

    if options.sequence:
        first, second = (hands[name] for name in options.sequence.split(","))
        for seed in seeds:
            config = dataclasses.replace(defaults, seed=seed)
            after_first = run(base, [first], config, mnist)
            for start_name, start in (("active version", after_first["model"]), ("base model", base)):
                result = run(start, [first, second], config, mnist)
                print(
                    f"| seed {seed} | from the {start_name} | {first.name} {after_first['new'][first.name]:.1%} -> "
                    f"{result['new'][first.name]:.1%} | {second.name} {base_new[second.name]:.1%} -> "
                    f"{result['new'][second.name]:.1%} | MNIST {100 * (result['mnist'] - base_mnist):+.2f} | "
                    f"worst digit {100 * (result['per_digit'] - base_digits).min():+.2f} |"
                )
        return

    chosen = options.variants.split(",") if options.variants else list(VARIANTS)
    print(
        "\n| variant | "
        + " | ".join(f"{n} removed" for n in names)
        + " | mean removed | MNIST Δ | worst digit Δ | fit s | early stop: epoch, mean removed |"
    )
    print("| --- |" + " ---: |" * (len(names) + 5))
    for variant in chosen:
        rows = []
        for seed in seeds:
            changes = dict(VARIANTS[variant])
            weight = changes.pop("weight", 1.0)
            config = dataclasses.replace(defaults, seed=seed, **changes)
            for name, hand in hands.items():
                result = run(base, [hand], config, mnist, weight=weight)
                rows.append((name, removed(base_new[name], result["new"][name]), result))
        shares = {name: np.mean([share for n, share, _ in rows if n == name]) for name in names}
        mnist_delta = np.mean([r["mnist"] - base_mnist for _, _, r in rows])
        worst = np.mean([(r["per_digit"] - base_digits).min() for _, _, r in rows])
        seconds = np.median([r["seconds"] for _, _, r in rows])
        early_epochs = [r["early"][0] for _, _, r in rows]
        early = np.mean([removed(base_new[n], r["early"][1][n]) for n, _, r in rows])
        print(
            f"| {variant} | "
            + " | ".join(f"{shares[n]:.0%}" for n in names)
            + f" | {np.mean(list(shares.values())):.0%} | {100 * mnist_delta:+.2f} | {100 * worst:+.2f} | {seconds:.0f} "
            f"| {'/'.join(map(str, early_epochs))}: {early:.0%} |",
            flush=True,
        )


def _value(text: str):
    """Return a --set value as the number, boolean or None it spells, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


if __name__ == "__main__":
    main()
