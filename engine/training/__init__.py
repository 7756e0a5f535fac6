"""Training, the only package that imports torch, timm and torchvision.

- `fit`: plain `train_one_epoch`, `validate` and `fit` functions after timm's train.py; the
  out-of-memory fallback (`fit_within_memory`).
- `models`: timm models by name, checked before a study exists, serialised for checkpoints.
- `tensors`: images read from the decoded-image cache (`engine.datasets.image_cache`), served as
  batches from memory or from the memory-mapped cache file.
- `devices`: what torch says about CUDA and MPS (`probe`).
- `package`: a trained model as one standalone .safetensors file (checkpoints, `train --out`).
- `predict`: inference with a package, with test-time augmentation (`tui-hpo predict`, `evaluate`).
- `single`: one training run outside a sweep (`tui-hpo train`, `repeat`).
- `profiling`: where a training step's time goes, under `torch.profiler` (`tui-hpo gpu profile`).
- `gpu_bench`: matmuls, bandwidths and training-step variants, measured (`tui-hpo gpu benchmark`).
- `batch_finder`: the largest batch that trains on a GPU (`tui-hpo gpu batch`, `batch_size: auto`).

Import the modules themselves: this `__init__` stays empty so that importing, say,
`engine.training.devices` does not build the whole training stack.
"""
