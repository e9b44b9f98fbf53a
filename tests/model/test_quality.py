"""Model quality through the whole pyfunc path, with the model from the full default training.

Fixed, seeded sets; figures are asserted, never times.
"""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
import torch

from mnist_mlops.serve.model.transforms import normalize, to_unit_range
from tests.fullmodel import full_network
from tests.helpers import png_bytes
from tests.synthetic import canvas_export, pen_drawing, phone_photo, scan_16bit


def raw_tensor_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
    network = full_network()
    with torch.inference_mode():
        logits = network(normalize(to_unit_range(torch.from_numpy(images))))
    return float((logits.argmax(1).numpy() == labels).mean())


def pyfunc_labels(model, frame: pd.DataFrame, rows_per_call: int = 32) -> np.ndarray:
    """Predicted labels; a row the model refuses (no digit found) counts as wrong (-1). Scored
    ``rows_per_call`` at a time, as a client sends them: one call decodes a bounded number of
    pixels (``serve.model.decode.REQUEST_PIXELS``), and 300 large photos are more than that."""
    labels = []
    for start in range(0, len(frame), rows_per_call):
        answer = model.predict(frame.iloc[start : start + rows_per_call], params={"on_error": "row"})
        labels += [-1 if label is None else int(label) for label in answer["label"]]
    return np.array(labels)


def test_mnist_test_set_through_the_pyfunc_stays_within_0_2_points_of_the_raw_network(full_model, mnist_test):
    images, labels = mnist_test
    raw = raw_tensor_accuracy(images, labels)
    as_pixels = (
        pyfunc_labels(full_model, pd.DataFrame({"pixels": list(images.reshape(len(images), -1))})) == labels
    ).mean()
    as_png = (pyfunc_labels(full_model, pd.DataFrame({"image": [png_bytes(i) for i in images]})) == labels).mean()
    print(f"MNIST test accuracy: raw tensors {raw:.4f}, pyfunc pixels {as_pixels:.4f}, pyfunc PNG {as_png:.4f}")
    assert raw >= 0.995 and as_png >= 0.995
    assert abs(as_pixels - raw) <= 0.002
    assert abs(as_png - raw) <= 0.002


def test_synthetic_phone_photos_of_test_digits_are_read_at_97_percent(full_model, mnist_test):
    images, labels = mnist_test
    rng = np.random.default_rng(2026)
    chosen = rng.choice(len(images), size=300, replace=False)
    photos = [base64.b64encode(phone_photo(images[i], rng)).decode() for i in chosen]
    predicted = pyfunc_labels(full_model, pd.DataFrame({"image": photos}))
    accuracy = float((predicted == labels[chosen]).mean())
    print(f"synthetic phone photos: {accuracy:.4f} of {len(chosen)}")
    assert accuracy >= 0.97


def test_twelve_megapixel_photos_are_read(full_model, mnist_test):
    images, labels = mnist_test
    rng = np.random.default_rng(12)
    chosen = rng.choice(len(images), size=10, replace=False)
    photos = [phone_photo(images[i], rng, size=(4000, 3000)) for i in chosen]
    assert (pyfunc_labels(full_model, pd.DataFrame({"image": photos})) == labels[chosen]).mean() >= 0.9


def test_a_drawing_app_export_with_a_transparent_background_is_read(full_model, mnist_test):
    images, labels = mnist_test
    chosen = range(40)
    exports = [canvas_export(images[i]) for i in chosen]
    predicted = pyfunc_labels(full_model, pd.DataFrame({"image": exports}))
    assert (predicted == labels[list(chosen)]).mean() >= 0.95


@pytest.mark.parametrize(
    ("digit", "strokes"),
    [
        (1, [[(0.5, 0.15), (0.52, 0.85)]]),
        (7, [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]]),
        (4, [[(0.6, 0.15), (0.25, 0.6), (0.75, 0.6)], [(0.6, 0.15), (0.6, 0.85)]]),
        (0, [[(0.5, 0.15), (0.72, 0.3), (0.75, 0.6), (0.5, 0.85), (0.28, 0.6), (0.3, 0.3), (0.5, 0.15)]]),
    ],
)
def test_thin_pen_strokes_on_a_canvas_are_read(full_model, digit, strokes):
    predicted = pyfunc_labels(full_model, pd.DataFrame({"image": [pen_drawing(strokes)]}))
    assert predicted[0] == digit


def test_a_16_bit_greyscale_scan_is_read(full_model, mnist_test):
    images, labels = mnist_test
    scans = [scan_16bit(images[i], seed=i) for i in range(20)]
    assert (pyfunc_labels(full_model, pd.DataFrame({"image": scans})) == labels[:20]).mean() >= 0.95


def test_probabilities_sum_to_one_and_confidence_is_their_maximum(full_model, mnist_test):
    images, _ = mnist_test
    answer = full_model.predict(pd.DataFrame({"pixels": list(images[:50].reshape(50, -1))}))
    probabilities = np.array(answer["probabilities"].tolist())
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(answer["confidence"], probabilities.max(axis=1))
    assert (answer["label"] == probabilities.argmax(axis=1)).all()


def test_faint_digits_among_jpeg_blocks_are_read_by_their_outline_alone(full_model, mnist_root):
    """Three of the tuning seed's faint photos (a 1, a 2, a 6 among heavy JPEG blocks): when the
    outline took ink above 0.3 of the strokes' level, blocks beside the strokes joined it and the
    answers were 6, 5 and 4. Above half the level (``photo.REGION_CUT``) the outline is the digit's."""
    from mnist_mlops.registry.evalsets.sets import TUNING_SEED, Sources, build

    samples = build("faint", Sources.load(mnist_root), TUNING_SEED, 273)
    chosen = [samples[i] for i in (99, 219, 272)]
    predicted = pyfunc_labels(full_model, pd.DataFrame({"image": [s.data for s in chosen]}))
    assert predicted.tolist() == [s.label for s in chosen] == [1, 2, 6]
