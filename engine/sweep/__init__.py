"""Running a sweep: the engine process, its persistent workers, and what keeps a sweep whole.

- `engine`: create or resume the study, start and supervise workers, export results (`Engine`).
- `worker`: a process that runs trial after trial (`python -m engine.sweep.worker`), of the
  built-in trainer (`image_trials`) or of a program (`command_trials`, over engine.command).
- `tracking`: each finished trial logged to W&B and MLflow (`integrations:`).
- `resolve`: command-line arguments -> the resolved config for this machine.
- `recovery`: trials of dead or interrupted workers failed and queued again.
- `samplers`: Optuna samplers and pruners by name.
- `checkpoints`, `cleanup`: the best K weights within a disk budget; disk back from old trials.
- `repeat`: top configs trained again over seeds.
- `compile_policy`, `packing`, `auto_batch`: `compile`, `trials_per_gpu` and `batch_size` set to
  auto, decided from measurements.

Import the modules themselves: importing this package loads none of them (a worker imports
torch, the engine does not).
"""
