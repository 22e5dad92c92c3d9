"""Image data sets as on-device uint8 tensors, plus batched augmentation (see load_dataset)."""
from cspnas.data.augment import augment_batch
from cspnas.data.images import ImageData
from cspnas.data.load import DATASETS, load_dataset

__all__ = ["DATASETS", "ImageData", "augment_batch", "load_dataset"]
