"""scikit-learn's 8x8 handwritten digits: 1,797 real scans, shipped inside scikit-learn."""

from __future__ import annotations

import numpy as np

from longmm.data.schema import Sample, SourceData


def read_digits() -> SourceData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; stretch them to the usual 0..255 of uint8 images.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    samples = [
        Sample(inputs={"image": img}, targets={"label": str(int(y))}, where=f"digits[{i}]")
        for i, (img, y) in enumerate(zip(images, bunch.target, strict=True))
    ]
    return SourceData(
        splits={"all": samples},
        classes=[str(d) for d in range(10)],
        description="scikit-learn digits: 1,797 real 8x8 grayscale scans of handwritten digits",
    )
