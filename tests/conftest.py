"""Suite-wide settings: TensorFlow's log level and threads, and how the files spread over cores.

`pytest -q` runs with `-n auto --dist loadfile --no-loadscope-reorder`
(setup.cfg's addopts; pytest-xdist is in the test extra): one worker per CPU
core (at most `MAX_WORKERS`: each worker imports TensorFlow and holds its
models), a whole test file per worker: a file's module-scoped fixtures (a
trained run, an export) are built once, and its tests run in their order. Most
of the suite's time is a few files of real processes (the apps, the README's
commands, multi-worker clusters), so the files are handed out slowest first
(`SLOWEST_FIRST`; `-n 0`, one process, keeps that order too): the many short
files then fill in at the end, and no worker is left alone with a long file
while the other is idle. A run of one test file (or node ids of one file)
stays in this process: workers would only add their TensorFlow imports.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One CPU thread per op, in this process and the apps it starts, before TensorFlow's
# runtime starts: the suite's models are tiny, and on them this is what tfflow-train
# does by default (tfflow.training.threads) and up to 2x faster than every core per op.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

MAX_WORKERS = 4
# Test files, longest first: every file of 20 s or more, by its tests' total time in a
# CI run on 2 cores (`.ci/run` at d3591cf with these settings and `--junitxml`: 1571 s of
# tests, 810 s wall). Files not named here run after these.
SLOWEST_FIRST = (
    "test_bijectors.py",
    "test_cli.py",
    "test_readme.py",
    "test_export.py",
    "test_multi_worker.py",
    "test_examples.py",
    "test_conditional.py",
    "test_models.py",
    "test_conditional_glow.py",
    "test_resume.py",
    "test_xla.py",
    "test_training.py",
    "test_bad_input.py",
    "test_distribute.py",
    "test_table_cli.py",
    "test_model_api.py",
    "test_vector_flows.py",
    "test_pictures.py",
    "test_memory_saving.py",
    "test_presets.py",
)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: a plain pytest without xdist still runs
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core (at most MAX_WORKERS); none for a run of one file."""
    files = {str(arg).split("::", 1)[0] for arg in config.args}
    if len(files) == 1 and next(iter(files)).endswith(".py"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_WORKERS))


def pytest_collection_modifyitems(items):
    """Orders the files slowest first (SLOWEST_FIRST); a file's own tests keep their order."""
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
