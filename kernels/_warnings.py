"""The warning category of brainsim, defined here, at the bottom of the package's layers.

``brainsim.kernels`` imports nothing from the rest of ``brainsim``, yet its native-kernel cache
warns the user (:mod:`brainsim.kernels._cpu`). A category defined in the kernels and re-exported
as ``brainsim.BrainsimWarning`` is one class for both, so a single filter (the test suite's
``error::brainsim.BrainsimWarning``, or a user's ``simplefilter("ignore", ...)``) covers every
warning the package emits.
"""


class BrainsimWarning(UserWarning):
    """Warnings emitted by brainsim itself (turned into errors in the test suite)."""
