"""Python's cyclic garbage collector and the long-lived heap TensorFlow brings.

Importing TensorFlow, TFP and Keras leaves ~400,000 objects that live as long
as the process (modules, op definitions, dispatch tables). Python's collector
walks all of them on every full collection, and tracing a model's first
training step allocates enough to trigger one: 0.21-0.24 s of the digits
Glow's ~2 s first step on 2 CPU cores (`gc.callbacks` timing; the
collection found nothing of TensorFlow's to free). `gc.freeze()` moves the
objects alive now into a permanent generation that later collections skip;
reference counting still frees each of them the moment it is no longer used,
so only reference cycles alive at that moment are kept for good.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_long_lived"]


def freeze_long_lived() -> None:
    """Leaves every object alive now out of later cyclic garbage collections.

    Called once the libraries are imported (`tfflow.models`), and again as an
    app exits (`tfflow.cli`): Python's last collection at exit then skips the
    heap (1.4 s of every app's exit with a model loaded; 0.1 s frozen).
    """
    gc.freeze()
