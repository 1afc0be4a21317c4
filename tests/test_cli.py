"""The command-line apps end to end, each in its own process, on a tiny budget.

One tiny Glow run on digits and one tiny RealNVP run on two moons are shared
by the tests that read their workdirs (`tfflow-sample`, `tfflow-evaluate`).
"""

import dataclasses
import json
import os
import pathlib
import pty
import subprocess
import sys
import time

import numpy as np
import pytest

from served import check_ok, last_line

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin")
TINY_GLOW = ["--scales=1", "--steps_per_scale=1", "--hidden_channels=8"]
TIMEOUT_S = 120


def _command(app, *flags):
    # The script from this checkout, run by this interpreter: no PATH needed.
    return [sys.executable, os.path.join(BIN, app), *flags]


def _run(app, *flags, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(_command(app, *flags), capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=TIMEOUT_S, check=False)




@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits")
    result = _run("tfflow-train", f"--workdir={workdir}", *TINY_GLOW, "--epochs=1",
                  "--batch_size=128", "--num_samples=4", "--verbose=2")
    return workdir, result


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("moons")
    result = _run("tfflow-train", "--model=realnvp", "--dataset=two_moons",
                  "--num_examples=256", "--num_couplings=2", "--hidden_units=16",
                  "--epochs=1", f"--workdir={workdir}", "--verbose=0")
    return workdir, result


def test_train_on_digits_writes_the_run_and_ends_with_test_bits_per_dim(digits_run):
    workdir, result = digits_run
    check_ok(result)
    for name in ("model.keras", "config.json", "samples_T0.7.png", "samples_T1.0.png"):
        assert (workdir / name).is_file(), name
    for run in ("train", "validation", "samples"):
        assert list((workdir / "logs" / run).glob("events.out.tfevents.*")), run
    last = last_line(result.stdout)
    assert "test" in last and "bits/dim" in last, last
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"] == "glow" and config["dataset"] == "digits"
    assert config["scales"] == 1 and config["epochs"] == 1
    assert (workdir / "samples_T0.7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_writes_npy_at_a_temperature(digits_run, tmp_path):
    workdir, _ = digits_run
    output = tmp_path / "s.npy"
    result = _run("tfflow-sample", f"--workdir={workdir}", "--num_samples=5",
                  "--temperature=0.5", f"--output={output}")
    check_ok(result)
    samples = np.load(output)
    assert samples.shape == (5, 8, 8, 1)
    assert np.all(np.isfinite(samples))


def test_evaluate_reports_bits_per_dim_and_round_trip_error(digits_run):
    workdir, train_result = digits_run
    check_ok(train_result)
    result = _run("tfflow-evaluate", f"--workdir={workdir}")
    check_ok(result)
    last = last_line(result.stdout)
    assert "bits/dim" in last and "round-trip error" in last, last
    error = float(last.rsplit("round-trip error", 1)[1].split()[0].rstrip(",;"))
    assert error < 1e-4
    assert "1x1 conv" in result.stdout and "condition number" in last, result.stdout
    # The same test bits/dim as training reported (same weights, same noise seed).
    bits = lambda line: float(line.split(" bits/dim")[0].rsplit(" ", 1)[1])  # noqa: E731
    assert bits(last) == pytest.approx(bits(last_line(train_result.stdout)), abs=1e-4)


def test_export_writes_a_versioned_saved_model(digits_run, tmp_path):
    workdir, train_result = digits_run
    check_ok(train_result)
    result = _run("tfflow-export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'serve'}")
    check_ok(result)
    assert (tmp_path / "serve" / "1" / "saved_model.pb").is_file()
    again = _run("tfflow-export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'serve'}",
                 "--version=1")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_train_on_two_moons_writes_the_density_picture(moons_run):
    workdir, result = moons_run
    check_ok(result)
    assert (workdir / "density.png").is_file()
    assert (workdir / "model.keras").is_file()
    last = last_line(result.stdout)
    assert "nats per row" in last and "Gaussian fit" in last, last


def test_rerunning_a_finished_run_is_refused_and_more_epochs_continue_it(moons_run):
    workdir, result = moons_run
    check_ok(result)
    flags = ["--model=realnvp", "--dataset=two_moons", "--num_examples=256", "--num_couplings=2",
             "--hidden_units=16", f"--workdir={workdir}", "--verbose=0"]
    again = _run("tfflow-train", *flags, "--epochs=1")
    assert again.returncode == 2, again.stdout + again.stderr
    last = last_line(again.stderr)
    assert "already holds this run, finished after 1 epoch" in last and "--overwrite" in last
    longer = _run("tfflow-train", *flags, "--epochs=2", "--verbose=2")  # later flags win
    check_ok(longer)
    assert "Continuing the finished run in" in longer.stdout, longer.stdout
    assert "2 epochs" in last_line(longer.stdout), longer.stdout


def test_every_train_config_field_has_a_flag_with_the_same_default():
    from absl import flags  # pylint: disable=import-outside-toplevel
    from tfflow import cli, training  # pylint: disable=import-outside-toplevel

    flag_values = flags.FlagValues()
    cli.define_train_flags(flag_values)
    defaults = training.TrainConfig()
    for field in dataclasses.fields(training.TrainConfig):
        if field.name in ("workdir", "verbose"):  # resolved later / CLI shows progress bars
            continue
        assert field.name in flag_values, field.name
        assert flag_values[field.name].default == getattr(defaults, field.name), field.name
    for define in (cli.define_sample_flags, cli.define_evaluate_flags):
        define(flags.FlagValues())  # each app's own flags define without clashes


def _corrupt_run(tmp_path, digits_run):
    """A copy of the digits run whose model.keras is cut short, as a crash mid-copy leaves it."""
    workdir, _ = digits_run
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((workdir / "config.json").read_text())
    (corrupt / "model.keras").write_bytes((workdir / "model.keras").read_bytes()[:1000])
    return corrupt


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path, digits_run):
    corrupt = _corrupt_run(tmp_path, digits_run)
    digits_workdir, _ = digits_run
    # (argv, words the one-line message must contain)
    cases = [
        (("tfflow-train", "--model=nonesuch", f"--workdir={tmp_path / 'a'}"), ["nonesuch"]),
        (("tfflow-train", "--dataset=nonesuch_set", f"--workdir={tmp_path / 'b'}"),
         ["nonesuch_set"]),
        (("tfflow-evaluate", f"--workdir={tmp_path / 'empty'}"), ["model.keras"]),
        (("tfflow-evaluate", f"--workdir={corrupt}"),
         ["cannot load", "corrupt or not a tfflow model file"]),
        (("tfflow-train", "--model=realnvp", f"--workdir={digits_workdir}"),
         ["holds a different run", "glow on digits", "realnvp on digits"]),
        (("tfflow-train", "--scales=5", f"--workdir={tmp_path / 'c'}"),
         ["5 scale(s)", "divisible by 32", "(8, 8, 1)", "fewer scales"]),
        (("tfflow-train", "--dataset=mnist", f"--data_dir={tmp_path / 'no_tfds'}",
          f"--workdir={tmp_path / 'd'}"), ["not prepared", "tfds build mnist", "--data_dir"]),
        (("tfflow-train", "--model=realnvp", "--dataset=two_moons", "--num_examples=512",
          "--num_couplings=2", "--hidden_units=8", "--batch_size=128", "--learning_rate=1e6",
          "--warmup_steps=0", "--ema_momentum=0", "--verbose=0", "--num_samples=4",
          f"--workdir={tmp_path / 'e'}"),
         ["training diverged", "at step", "(epoch", "layer '", "last good model",
          str(tmp_path / "e" / "model.keras")]),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Three at a time: each spends most of its time importing TensorFlow.
    for start in range(0, len(cases), 3):
        processes = [(subprocess.Popen(_command(*argv), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=env), words)
                     for argv, words in cases[start:start + 3]]
        for process, words in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == 2, stdout + stderr
            assert "Traceback" not in stderr, stderr
            last = last_line(stderr)
            assert last.startswith("tfflow-") and ": error: " in last, stderr
            for word in words:
                assert word in last, (word, last)
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "d").exists()  # nothing written for a run that cannot start


# ------------------------------------------------ every app error: one line, exit 2
#
# Grouped by app: (argv after the app's name, expected exit status, fragments of
# the one stderr line). In argv, {tmp} is a fresh folder holding `a_file`
# (a file), `a_folder.png` (a folder), `empty.npy` and `empty.csv` (0 bytes), `rank3.npy`,
# `mixed` (a workdir whose model.keras is a realnvp, its config.json a glow
# run) and `backup_is_a_file` (a workdir whose `backup` is a file); {run} is
# the tiny digits run. A new app, or a new flag that names a path or a number,
# adds its rows here. Most rows end before TensorFlow is imported; the few that
# load it (a table's contents, a model file, a run) are kept few: each costs
# seconds. Wrong table contents have their own table in test_table_cli.py.
TINY_MOONS = ["--model=nice", "--dataset=two_moons", "--num_examples=64", "--num_couplings=2",
              "--hidden_units=4", "--batch_size=32", "--num_samples=4", "--verbose=0"]
APP_ERROR_CASES = {
    "tfflow-train": [
        (["--workdir={tmp}/a_file"], 2, ["--workdir", "'{tmp}/a_file'", "is a file"]),
        (["--workdir={tmp}/a_file/run"], 2, ["lies under the file '{tmp}/a_file'"]),
        (["--workdir=/proc/tfflow_run"], 2, ["cannot write --workdir='/proc/tfflow_run'",
                                             "'/proc'", "(ENOENT)"]),
        (["--workdir="], 2, ["--workdir", "empty path ''"]),
        (["--seed=-1", "--workdir={tmp}/w"], 2, ["--seed", "[0, 4294967295]", "got -1"]),
        (["--seed=4294967296", "--workdir={tmp}/w"], 2, ["--seed", "got 4294967296"]),
        (["--intra_op_threads=-1", "--workdir={tmp}/w"], 2,
         ["intra_op_threads an int >= 0", "got -1"]),
        (["--model=realnvp", "--dataset={tmp}/empty.npy", "--workdir={tmp}/w"], 2,
         ["--dataset", "'{tmp}/empty.npy'", "empty (0 bytes)"]),
        (["--model=realnvp", "--dataset={tmp}/empty.csv", "--workdir={tmp}/w"], 2,
         ["--dataset", "'{tmp}/empty.csv'", "empty (0 bytes)"]),
        (["--model=realnvp", "--dataset={tmp}/a_folder.npy", "--workdir={tmp}/w"], 2,
         ["--dataset", "is a folder"]),
        (["--model=realnvp", "--dataset={tmp}/rank3.npy", "--workdir={tmp}/w"], 2,
         ["2-D array", "(10, 3, 2)"]),
        (["positional", "--workdir={tmp}/w"], 2, ["unexpected arguments ['positional']"]),
        (["--no_such_flag"], 2, ["no_such_flag"]),
        # An OS error deep in a run: the top level names the path and the reason.
        ([*TINY_MOONS, "--epochs=2", "--workdir={tmp}/backup_is_a_file"], 2,
         ["'{tmp}/backup_is_a_file/backup'", "File exists (EEXIST)"]),
    ],
    "tfflow-sample": [
        (["--workdir={run}", "--temperature=inf"], 2, ["--temperature", "finite", "got inf"]),
        (["--workdir={run}", "--temperature=nan"], 2, ["--temperature", "got nan"]),
        (["--workdir={run}", "--temperature=-1"], 2, ["--temperature", "got -1.0"]),
        (["--workdir={run}", "--num_samples=0"], 2, ["--num_samples >= 1, got 0"]),
        (["--workdir={run}", "--seed=-1"], 2, ["--seed", "got -1"]),
        (["--workdir={run}", "--output={tmp}/a_folder.png"], 2,
         ["--output", "'{tmp}/a_folder.png'", "is a folder"]),
        (["--workdir={run}", "--output={tmp}/a_file/s.png"], 2,
         ["lies under the file '{tmp}/a_file'"]),
        (["--workdir={run}", "--output={tmp}/s.jpg"], 2, [".png or .npy", "s.jpg"]),
        (["--workdir={run}", "--context_file={tmp}/empty.npy"], 2,
         ["--context_file", "empty (0 bytes)"]),
        (["--workdir={tmp}/a_file"], 2, ["--workdir", "'{tmp}/a_file'", "is a file"]),
        (["--workdir={tmp}/nonesuch"], 2, ["no folder '{tmp}/nonesuch'", "tfflow-train"]),
        (["--workdir="], 2, ["empty path ''"]),
    ],
    "tfflow-evaluate": [
        (["--workdir={tmp}/mixed"], 2, ["mixes two runs", "holds a realnvp model",
                                        "describes glow on digits"]),
        (["--workdir={run}", "--batch_size=0"], 2, ["--batch_size >= 1, got 0"]),
        (["--workdir={run}", "--split=nonesuch"], 2, ["--split", "'nonesuch'"]),
        (["--workdir={tmp}/a_file"], 2, ["is a file"]),
        (["--workdir="], 2, ["empty path ''"]),
    ],
    "tfflow-export": [
        (["--workdir={run}", "--export_dir={tmp}/a_file"], 2,
         ["--export_dir", "'{tmp}/a_file'", "is a file"]),
        (["--workdir={run}", "--export_dir={tmp}/a_file/serve"], 2,
         ["lies under the file '{tmp}/a_file'"]),
        (["--workdir={run}", "--export_dir=/proc/tfflow_export"], 2,
         ["cannot write --export_dir", "(ENOENT)"]),
        (["--workdir={run}", "--version=0", "--export_dir={tmp}/serve"], 2,
         ["--version >= 1, got 0"]),
        (["--workdir={tmp}/a_file"], 2, ["is a file"]),
    ],
}


def _app_error_fixtures(tmp, digits_workdir, moons_workdir):
    (tmp / "a_file").write_text("not a folder")
    (tmp / "a_folder.png").mkdir()
    (tmp / "a_folder.npy").mkdir()
    (tmp / "empty.npy").write_bytes(b"")
    (tmp / "empty.csv").write_bytes(b"")
    np.save(tmp / "rank3.npy", np.zeros((10, 3, 2)))
    mixed = tmp / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_text((digits_workdir / "config.json").read_text())
    (mixed / "model.keras").write_bytes((moons_workdir / "model.keras").read_bytes())
    (tmp / "backup_is_a_file").mkdir()
    (tmp / "backup_is_a_file" / "backup").write_text("in the way")


def test_every_app_error_is_one_line_on_stderr_and_exit_2(tmp_path, digits_run, moons_run):
    check_ok(digits_run[1])
    check_ok(moons_run[1])
    _app_error_fixtures(tmp_path, digits_run[0], moons_run[0])
    cases = [(app, [arg.format(tmp=tmp_path, run=digits_run[0]) for arg in argv], code,
              [fragment.format(tmp=tmp_path) for fragment in fragments])
             for app, rows in APP_ERROR_CASES.items() for argv, code, fragments in rows]
    # Without TF_CPP_MIN_LOG_LEVEL, as a new user runs them: stderr is the one line.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    failures = []
    # Four at a time: most end before TensorFlow is imported, in about a second.
    for start in range(0, len(cases), 4):
        batch = [(app, argv, code, fragments, subprocess.Popen(
            _command(app, *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env)) for app, argv, code, fragments in cases[start:start + 4]]
        for app, argv, code, fragments, process in batch:
            _, stderr = process.communicate(timeout=TIMEOUT_S)
            lines = stderr.splitlines()
            ok = (process.returncode == code and len(lines) == 1
                  and lines[0].startswith(f"{app}: error: ")
                  and all(fragment in lines[0] for fragment in fragments))
            if not ok:
                failures.append((app, argv, process.returncode, stderr[-1500:]))
    assert not failures, "\n\n".join(map(repr, failures))
    assert not (tmp_path / "w").exists()  # a run that cannot start writes nothing
    assert not list(tmp_path.glob(".tfflow-write-check-*"))  # the write probes are gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_workdir_is_one_line_and_exit_2(tmp_path):
    workdir = tmp_path / "read_only"
    workdir.mkdir()
    workdir.chmod(0o555)
    try:
        result = _run("tfflow-train", *TINY_MOONS, "--epochs=1", f"--workdir={workdir}")
    finally:
        workdir.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("tfflow-train: error: cannot write "
                                                     f"--workdir='{workdir}'"), result.stderr
    assert "Permission denied (EACCES)" in result.stderr


def test_os_errors_and_tensorflow_file_errors_become_one_line(capsys):
    import errno  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfflow import cli  # pylint: disable=import-outside-toplevel

    # The apps' one error reporter, fed each error directly (a real disk-full is not
    # reproducible here); every app's main goes through it.
    def raising(error):
        def run(training):
            raise error
        return run

    cases = [
        (OSError(errno.ENOSPC, "No space left on device", "/runs/model.keras"),
         "'/runs/model.keras': No space left on device (ENOSPC)."),
        (PermissionError(errno.EACCES, "Permission denied", "/runs/a", None, "/runs/b"),
         "'/runs/a' -> '/runs/b': Permission denied (EACCES)."),
        (tf.errors.FailedPreconditionError(
            None, None, "{{function_node __wrapped__WriteFile_device_/job:localhost/replica:0/"
            "task:0/device:CPU:0}} /runs/s.png; Is a directory [Op:WriteFile]"),
         "/runs/s.png; Is a directory."),
        (tf.errors.NotFoundError(None, None, "/runs/x; No such file or directory"),
         "/runs/x; No such file or directory."),
    ]
    for error, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli._run_reporting_user_errors(["tfflow-x"], raising(error))
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == f"tfflow-x: error: {message}\n"
    # Anything else is a bug in tfflow and keeps its traceback.
    for error in (RuntimeError("bug"), tf.errors.InvalidArgumentError(None, None, "bug")):
        with pytest.raises(type(error)):
            cli._run_reporting_user_errors(["tfflow-x"], raising(error))
    # Ctrl-C: one line, exit status 130; a lost worker: one line, exit status 2.
    with pytest.raises(SystemExit) as exit_info:
        cli._run_reporting_user_errors(["tfflow-x"], raising(KeyboardInterrupt()),
                                       resume_hint=lambda: "resume thus.")
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "tfflow-x: interrupted; resume thus.\n"
    lost = tf.errors.UnavailableError(None, None, 'Collective ops is aborted by: ... '
                                      '{grpc_message:"recvmsg:Connection reset by peer", '
                                      'grpc_status:14} [Op:__inference_multi_step_on_iterator]')
    with pytest.raises(SystemExit) as exit_info:
        cli._run_reporting_user_errors(["tfflow-x"], raising(lost),
                                       resume_hint=lambda: "resume thus.")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "tfflow-x: error: lost contact with another worker of the run (recvmsg:Connection "
        "reset by peer); start every worker again; resume thus.\n")


# ------------------------------------------------------- a new user's first hour


APPS_AND_OWN_FLAGS = {
    "tfflow-train": ["--epochs", "(default: '26')", "--model", "--dataset", "two_moons",
                     "--warmup_steps", "--max_train_seconds", "--coupling"],
    "tfflow-sample": ["--num_samples", "(default: '64')", "--temperature", "--output"],
    "tfflow-evaluate": ["--split", "train, validation, test", "--batch_size"],
    "tfflow-export": ["--export_dir", "--version", "--workdir"],
}


@pytest.mark.parametrize("app", sorted(APPS_AND_OWN_FLAGS))
def test_help_lists_the_apps_own_flags_with_defaults_and_exits_0_fast(app):
    start = time.monotonic()
    result = _run(app, "--help")
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert seconds < 2.0, seconds  # flags are parsed before TensorFlow is imported
    assert result.stdout.startswith(f"{app}: "), result.stdout[:200]
    for words in APPS_AND_OWN_FLAGS[app]:
        assert words in result.stdout, (words, result.stdout)
    assert "--helpfull" in result.stdout
    assert "--alsologtostderr" not in result.stdout  # absl's own flags: --helpfull only


def test_the_cli_module_and_the_config_load_without_tensorflow():
    code = ("import sys, tfflow, tfflow.cli, tfflow.data, tfflow.training; "
            "tfflow.cli.define_train_flags(); print(sorted(m for m in ('tensorflow', 'keras') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=TIMEOUT_S, check=False,
                            env={**os.environ, "TFFLOW_DEFER_IMPORTS": "1"})  # as bin/ sets it
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_import_tfflow_is_all_keras_needs_to_load_a_tfflow_model():
    path = pathlib.Path(__file__).parent / "data" / "saved_29d194f" / "nice.keras"
    code = ("import tfflow, keras; "
            f"print(type(keras.models.load_model({str(path)!r})).__name__)")
    env = {k: v for k, v in os.environ.items() if k != "TFFLOW_DEFER_IMPORTS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=TIMEOUT_S, check=False, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "FlowModel", result.stdout



def test_import_tfflow_freezes_the_libraries_heap_and_later_cycles_are_still_collected():
    # tfflow._heap: full collections skip TensorFlow's long-lived objects; the user's are not.
    code = ("import gc, weakref, tfflow\n"
            "class Node: pass\n"
            "a, b = Node(), Node(); a.b, b.a = b, a; probe = weakref.ref(a); del a, b\n"
            "gc.collect(); print(gc.get_freeze_count(), probe() is None)")
    env = {k: v for k, v in os.environ.items() if k != "TFFLOW_DEFER_IMPORTS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=TIMEOUT_S, check=False, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    frozen, collected = result.stdout.split()
    assert int(frozen) > 100_000, frozen  # TensorFlow, TFP and Keras leave ~400,000
    assert collected == "True", result.stdout

@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """A run as a new user starts it: no TF_CPP_MIN_LOG_LEVEL, output to a pipe, tiny budget."""
    workdir = tmp_path_factory.mktemp("budget")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        _command("tfflow-train", "--model=realnvp", "--dataset=two_moons", "--num_examples=256",
                 "--num_couplings=2", "--hidden_units=8", "--epochs=3", "--batch_size=32",
                 "--max_train_seconds=0.001", f"--workdir={workdir}"),
        capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False)


def test_tensorflow_start_up_lines_stay_off_the_terminal(budget_run):
    check_ok(budget_run)
    for noise in ("absl::InitializeLog", "I0000", "cuInit", "oneDNN", "cuda drivers"):
        assert noise not in budget_run.stderr, budget_run.stderr


def test_piped_output_gets_one_plain_line_per_epoch(budget_run):
    check_ok(budget_run)
    assert "Epoch 1/3" in budget_run.stdout
    assert "\r" not in budget_run.stdout and "\x1b" not in budget_run.stdout, \
        budget_run.stdout[-2000:]


def test_first_line_states_the_plan_and_the_summary_says_the_budget_stopped_it(budget_run):
    check_ok(budget_run)
    first = budget_run.stdout.splitlines()[0]
    # 256 points, batch 32: 8 steps per epoch, 24 planned, so at most 2 warm-up steps.
    for words in ("3 epochs x 8 steps = 24 steps", "warm-up 2 steps (cut from 200",
                  "time budget 0.001 s"):
        assert words in first, (words, first)
    last = last_line(budget_run.stdout)
    assert "stopped by the 0.001 s time budget after 1 of 3 epochs" in last, last


def test_a_terminal_gets_keras_progress_bars(tmp_path):
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            _command("tfflow-train", "--model=nice", "--dataset=two_moons", "--num_examples=64",
                     "--num_couplings=2", "--hidden_units=8", "--epochs=1", "--batch_size=32",
                     f"--workdir={tmp_path}"),
            stdout=follower, stderr=subprocess.PIPE, env=os.environ.copy())
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=TIMEOUT_S)
    finally:
        os.close(leader)
    output = b"".join(chunks).decode("utf-8", "replace")
    assert process.returncode == 0, output[-3000:]
    assert "━" in output, output[-3000:]  # Keras's bar, redrawn in place


def test_train_help_names_every_strategy():
    # The help describes each strategy in words, so it cannot be derived from the list
    # (which imports TensorFlow, and --help answers without it); this keeps them together.
    from tfflow import cli  # pylint: disable=import-outside-toplevel
    from tfflow.training import STRATEGIES  # pylint: disable=import-outside-toplevel
    text = cli._TRAIN_FLAG_HELP["strategy"]  # pylint: disable=protected-access
    assert [name for name in STRATEGIES if name not in text] == []
