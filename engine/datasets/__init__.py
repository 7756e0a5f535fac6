"""What images a data path holds: the embedded digits, ImageFolder trees, CSV label files; their
classes, what was skipped and why, and the train/validation splits. Never imports torch, so the
wizard can check a path; decoding into tensors is `engine.training.tensors`.
"""

from engine.datasets.scan import Entry, Scan, scan, splits

__all__ = ["Entry", "Scan", "scan", "splits"]
