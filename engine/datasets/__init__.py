"""What images a data path holds: the embedded digits, ImageFolder trees, CSV label files; their
classes, what was skipped and why, and the train/validation splits; what the data decides about
training (`defaults`: epochs from min/max steps, image size, augmentation); the decoded-image
cache (`image_cache`) every worker reads; small sample photo datasets (`samples`). Never imports
torch, so the wizard can check a path; the tensors a model trains on are `engine.training.tensors`.
"""

from engine.datasets.scan import Entry, Scan, scan, splits

__all__ = ["Entry", "Scan", "scan", "splits"]
