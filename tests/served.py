"""What several test files share: serving a conditional export elsewhere, reading app output."""

import json
import subprocess
import sys

# Runs in a fresh process with tfflow and TFP made unimportable, as a serving host has
# neither: argv = SavedModel path, inputs .npz (x, c), output .json, n, temperature.
_SERVE_CONDITIONAL = r"""
import json, sys
sys.modules["tensorflow_probability"] = None
sys.modules["tfflow"] = None
import numpy as np
import tensorflow as tf
path, inputs, out_file, n, temperature = sys.argv[1:6]
sig = tf.saved_model.load(path).signatures
data = dict(np.load(inputs))
x, c = tf.constant(data["x"]), tf.constant(data["c"])
out = {"inputs": sorted(sig["log_prob"].structured_input_signature[1]),
       "log_prob": sig["log_prob"](x=x, context=c)["log_prob"].numpy().tolist(),
       "samples": sig["sample"](n=tf.constant(int(n)), seed=tf.constant([1, 2]),
                                temperature=tf.constant(float(temperature)),
                                context=c[:2])["samples"].numpy().tolist()}
try:
    sig["log_prob"](x=x, context=c[:2])
    out["mismatch"] = "no error"
except Exception as error:
    out["mismatch"] = str(error)[:300]
json.dump(out, open(out_file, "w"))
"""


def serve_conditional(path, x, c, folder, *, n: int, temperature: float) -> dict:
    """The export at `path` served elsewhere: log_prob of (x, c), n samples per c[:2] row.

    Also "inputs" (the log_prob signature's input names) and "mismatch" (the
    error for contexts that are not one per example).
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    np.savez(folder / "inputs.npz", x=x, c=c)
    subprocess.run([sys.executable, "-c", _SERVE_CONDITIONAL, str(path),
                    str(folder / "inputs.npz"), str(folder / "out.json"), str(n),
                    str(temperature)], check=True, timeout=300)
    return json.loads((folder / "out.json").read_text())


def last_line(text: str) -> str:
    """The last non-blank line of an app's output."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_ok(result) -> None:
    """An app's process ended well: status 0, no traceback."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
