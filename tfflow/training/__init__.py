"""Train, evaluate and sample flows: the library behind `tfflow-train`, `-evaluate`, `-sample`.

One `TrainConfig` holds every hyper-parameter (with defaults that train Glow on
the embedded digits within a few minutes on a laptop CPU). `train(config)`:

1. resolves the data set once into a `RunData` (its `tfflow.data.Source`, and
   how the run batches it) and builds the model inside the
   `tf.distribute.Strategy` made by `make_strategy` (the one place strategies
   are created);
2. fits it with a validation split, early stopping on the validation loss that
   restores the best weights, a wall-clock budget, Keras progress bars, and
   TensorBoard logs (loss, bits/dim, and sample pictures every epoch; written
   with core TF ops, so only viewing them needs the `tensorboard` package);
3. writes into `config.workdir`: `model.keras`, `config.json`, sample grids at
   T=0.7 and T=1.0 (images) or `density.png` (2-D data), and `logs/`;
4. evaluates on the test split and returns a `TrainResult` whose `summary()` is
   the one-line report (test bits/dim, and for tabular data the NLL in the
   file's own units beside a fitted Gaussian's).

`load_run(workdir)` reads a run back; `evaluate` and `sample` work on any
model and config.

The pieces, one module each: `config` (TrainConfig and the results),
`strategies` (tf.distribute), `threads` (CPU threads per op), `determinism`
(reproducible runs), `callbacks` (budget, annealing, divergence guard,
TensorBoard), `checkpoints` (atomic writes, the backup a killed run resumes
from), `health` (diagnosing overflow, conditioning), `run_data` (the run's
resolved data source), `pictures` (sample grids, density pictures, sample,
write_samples) and `runs` (train in named steps, evaluate, load_run).
Everything public is re-exported here.

Example (a tiny run; the defaults train for minutes):

>>> import tempfile
>>> config = TrainConfig(model="realnvp", dataset="two_moons", num_examples=256,
...                      epochs=1, workdir=tempfile.mkdtemp(), verbose=0)
>>> result = train(config)                                    # doctest: +SKIP
>>> print(result.summary())                                   # doctest: +SKIP
realnvp on two_moons: test NLL 2.6 nats per row (the data's units), 0.8 better than ...
"""

from tfflow._lazy import lazy_attributes
from tfflow.training.config import (CONFIG_FILE, LOG_DIR, MODEL_FILE, PRECISIONS, EvalResult,
                                    TrainConfig, TrainResult, default_workdir)
from tfflow.training.errors import TrainingDiverged, UserError

# The config and the errors above load without TensorFlow (the command-line
# apps parse their flags into a TrainConfig before TensorFlow starts);
# everything else loads on first use.
_LAZY = {
    "AnnealLearningRate": "callbacks", "DivergenceGuard": "callbacks",
    "TensorBoardLogger": "callbacks", "TimeBudget": "callbacks", "BACKUP_DIR": "checkpoints",
    "TMP_PREFIX": "checkpoints", "save_model": "checkpoints", "MODEL_NAMES": "config",
    "enable_determinism": "determinism",
    "conv1x1_condition_numbers": "health", "find_non_finite_layer": "health",
    "SAMPLE_TEMPERATURES": "pictures", "sample": "pictures", "write_samples": "pictures",
    "RunData": "run_data", "evaluate": "runs", "load_run": "runs", "train": "runs",
    "STRATEGIES": "strategies", "is_chief": "strategies", "make_strategy": "strategies",
    "planned_intra_op_threads": "threads",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, (
    "callbacks", "checkpoints", "config", "determinism", "errors", "health", "pictures",
    "run_data", "runs", "strategies", "threads"))

__all__ = [
    "AnnealLearningRate",
    "BACKUP_DIR",
    "CONFIG_FILE",
    "DivergenceGuard",
    "EvalResult",
    "LOG_DIR",
    "MODEL_FILE",
    "MODEL_NAMES",
    "PRECISIONS",
    "RunData",
    "SAMPLE_TEMPERATURES",
    "STRATEGIES",
    "TMP_PREFIX",
    "TensorBoardLogger",
    "TimeBudget",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "UserError",
    "conv1x1_condition_numbers",
    "default_workdir",
    "enable_determinism",
    "evaluate",
    "find_non_finite_layer",
    "is_chief",
    "load_run",
    "make_strategy",
    "planned_intra_op_threads",
    "sample",
    "save_model",
    "train",
    "write_samples",
]
