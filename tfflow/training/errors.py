"""The errors that tfflow's command-line apps report on one line (exit status 2)."""

from __future__ import annotations

__all__ = ["TrainingDiverged", "UserError"]


class UserError(ValueError):
    """A mistake in what the user asked for (a name, a path, a flag value).

    The command-line apps print its message on one line and exit with status 2.
    """


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite; `train` stopped at that step.

    A `UserError` because the cure lies in the config (a lower learning rate,
    gradient clipping, a longer warm-up), so the command-line apps print it on
    one line and exit with status 2.

    Attributes:
      step: 1-based global training step whose loss was not finite.
      epoch: 1-based epoch of that step.
      batch: 1-based batch within the epoch.
      layer: What the diagnostic pass found (the first layer of the flow,
        data -> latent, whose weights, output or log-det is not finite), or None.
      checkpoint: Path of the last good model (`model.keras`, loadable with
        `keras.models.load_model` or `load_run`).
    """

    def __init__(self, message: str, *, step: int, epoch: int, batch: int,
                 layer: str | None, checkpoint: str | None) -> None:
        super().__init__(message)
        self.step, self.epoch, self.batch = step, epoch, batch
        self.layer, self.checkpoint = layer, checkpoint
