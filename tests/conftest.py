"""Suite-wide settings: TensorFlow's log level and threads, and how a parallel run spreads files.

`pytest -q -n auto --dist loadfile --no-loadscope-reorder` (pytest-xdist, in the
test extra) runs the suite on one worker per CPU core (at most `MAX_WORKERS`: each
worker imports TensorFlow and holds its models), a whole test file per worker: a
file's module-scoped fixtures (a trained run, an export) are built once, and its
tests run in their order. Most of the suite's time is a few files of real
processes (the apps, the README's commands, multi-worker clusters), so the files
are handed out slowest first (`SLOWEST_FIRST`; the plain run keeps that order
too): the many short files then fill in at the end, and no worker is left alone
with a long file while the other is idle. With `-n auto`, a run of one test file
(or node ids of one file) stays in this process: workers would only add their
TensorFlow imports.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One CPU thread per op, in this process and the apps it starts, before TensorFlow's
# runtime starts: the suite's models are tiny, and on them this is what tfflow-train
# does by default (tfflow.training.threads) and up to 2x faster than every core per op.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

MAX_WORKERS = 4
# Test files, longest first: the files of the 25 slowest tests of a full serial run on
# 2 cores (1608 s, 2 Dec), then the largest files. Not yet a per-file measurement:
# reorder it from a `--durations=0` run. Files not named here run after these.
SLOWEST_FIRST = (
    "test_readme.py",
    "test_bad_input.py",
    "test_bijectors.py",
    "test_cli.py",
    "test_multi_worker.py",
    "test_export.py",
    "test_xla.py",
    "test_examples.py",
    "test_resume.py",
    "test_table_cli.py",
    "test_conditional_glow.py",
    "test_pictures.py",
    "test_models.py",
    "test_layers.py",
    "test_training.py",
    "test_distribute.py",
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
