"""Old public names kept for one release after a rename (no TensorFlow)."""

from __future__ import annotations

import warnings

__all__ = ["deprecated_subclass"]


def deprecated_subclass(cls: type, old_name: str) -> type:
    """A subclass of `cls` called `old_name` that warns (`DeprecationWarning`) on construction.

    It adds nothing else, so code and files that name the old class keep
    working; remove it one release after the rename.
    """
    def __init__(self, *args, **kwargs):
        warnings.warn(f"tfflow: {old_name} is deprecated and will be removed in the next "
                      f"release; use {cls.__name__}.", DeprecationWarning, stacklevel=2)
        cls.__init__(self, *args, **kwargs)

    return type(old_name, (cls,), {
        "__init__": __init__, "__module__": cls.__module__, "__qualname__": old_name,
        "__doc__": f"Deprecated alias of `{cls.__name__}` (warns; removed in the next release)."})
