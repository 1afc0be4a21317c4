"""The README's Python examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


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
