"""The README's examples run as written: every Python block, and every command block.

Python blocks run in one namespace, in order, as a reader pastes them. Command
blocks (```bash) run line by line in a fresh folder per block, each app as
`python bin/<app>` of this checkout, with these substitutions, so that the whole
file runs in a few minutes on 2 CPU cores (`_smaller` applies them and
`test_readme_command_blocks_run` prints each command as run):

* `tfflow-train` trains 1 epoch of a tiny model of the same family (Glow: 1-2
  steps per scale of 8 hidden channels, `--scales` kept; RealNVP: 2 couplings
  of 16 units on 512 points; MAF/IAF/NSF: 1 transform of 16 units) with
  4 samples per picture; every other flag is kept, so the command's shape of
  data, model family and options are what the README says.
* A command with `--data_dir` (a tensorflow-datasets set) runs under
  `tfds.testing.mock_data`: nothing is downloaded here.
* The data files a command names (`my_table.csv`, `sims.csv`) are written
  first: small tables with the columns the command uses.
* Not run: `pip install` (the tests run in the installed environment),
  `pytest` (this suite), and `tensorflow_model_server` (TF Serving's server is
  not installable here; tests/test_export.py runs the SavedModel's signatures
  in a separate process and through `saved_model_cli`).
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
APPS = ("tfflow-train", "tfflow-sample", "tfflow-evaluate", "tfflow-export")
NOT_RUN = {
    "pip": "the tests run in the installed environment",
    "pytest": "this is the test suite",
    "tensorflow_model_server": "TF Serving's model server is not installable here "
                               "(tests/test_export.py drives the SavedModel instead)",
}
# Flags that make a training command tiny, per model family (see the module docstring).
TINY = {
    "glow": {"hidden_channels": "8"},
    "realnvp": {"num_couplings": "2", "hidden_units": "16", "num_examples": "512"},
    "nice": {"num_couplings": "2", "hidden_units": "16", "num_examples": "512"},
    "maf": {"transforms": "1", "hidden_units": "16"},
    "iaf": {"transforms": "1", "hidden_units": "16"},
    "nsf": {"transforms": "1", "hidden_units": "16"},
}
# Runs an app under tfds.testing.mock_data (random examples of the set's real shapes).
_MOCKED = ("import runpy, sys\nimport tensorflow_datasets as tfds\n"
           "sys.argv = sys.argv[1:]\n"
           "with tfds.testing.mock_data(num_examples=64):\n"
           "    runpy.run_path(sys.argv[0], run_name='__main__')\n")


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _python_blocks():
    return _blocks("python")


def test_readme_has_python_examples():
    assert _python_blocks()


def test_readme_python_examples_run(capsys):
    namespace = {}  # one session, as a reader runs the blocks in order
    for block in _python_blocks():
        exec(compile(block, str(README), "exec"), namespace)  # pylint: disable=exec-used
    out = capsys.readouterr().out
    assert "(8,)" in out and "(1,)" in out


def test_readme_quick_start_has_exactly_the_two_commands():
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, re.S)[0].strip().splitlines()
    assert commands == ['pip install -e . && tfflow-train',
                        'pip install -e ".[test]" && pytest -q']


def _commands(block):
    """Each command of a block: lines without their comments, split at `&&`."""
    for line in block.splitlines():
        line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
        for command in filter(None, (part.strip() for part in line.split("&&"))):
            yield shlex.split(command)


def _smaller(app, args):
    """The command's flags with the substitutions of the module docstring."""
    if app != "tfflow-train":
        return list(args)
    flags = dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], None) for arg in args)
    model = flags.get("model", "glow")
    if model not in TINY:
        raise AssertionError(f"README command trains {model!r}: add its tiny flags to TINY")
    flags.update(TINY[model], epochs="1", num_samples="4")
    if model == "glow":  # the flag's name as the command spells it (a later rename included)
        name = "steps_per_scale" if "steps_per_scale" in flags else "steps_per_level"
        flags[name] = str(min(int(flags.get(name, 1)), 2))
    return [f"--{name}" if value is None else f"--{name}={value}" for name, value in flags.items()]


def _write_data_files(folder, commands):
    """The tables the commands name, with the columns they use."""
    rng = np.random.default_rng(0)
    named = " ".join(" ".join(command) for command in commands)
    if "my_table.csv" in named:
        np.savetxt(folder / "my_table.csv", rng.gamma(2., size=(400, 3)) * [1., 10., 1e3],
                   delimiter=",", header="x,y,z", comments="")
    if "sims.csv" in named:
        a, b = rng.normal(size=(2, 400))
        table = np.stack([a, b, a + b + 0.3 * rng.normal(size=400),
                          a * b + 0.3 * rng.normal(size=400)], 1)
        np.savetxt(folder / "sims.csv", table, delimiter=",", header="a,b,x1,x2", comments="")


def _command_blocks():
    return [block for block in _blocks("bash")
            if any(command and command[0] in APPS for command in _commands(block))]


def test_every_readme_command_is_run_or_said_not_to_be():
    for block in _blocks("bash"):
        for command in _commands(block):
            assert command[0] in APPS or command[0] in NOT_RUN, (
                f"README command {' '.join(command)!r}: run it in "
                f"test_readme_command_blocks_run or say in NOT_RUN why not")


@pytest.mark.parametrize("index", range(len(_command_blocks())))
def test_readme_command_blocks_run(index, tmp_path):
    commands = list(_commands(_command_blocks()[index]))
    _write_data_files(tmp_path, commands)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for command in commands:
        app, args = command[0], command[1:]
        if app in NOT_RUN:
            print(f"not run: {' '.join(command)} ({NOT_RUN[app]})")
            continue
        args = _smaller(app, args)
        script = str(ROOT / "bin" / app)
        argv = [sys.executable, script, *args]
        if any(arg.startswith("--data_dir") for arg in args):
            argv = [sys.executable, "-c", _MOCKED, script, *args]
        print(f"running: {app} {' '.join(args)}")
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (
            f"README command {' '.join(command)!r} (run as {app} {' '.join(args)}) failed:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
