"""The plugin's algorithms free of veRL: their tensor math and, in each loss's math module, its
:class:`~verl_espo.loss_inputs.LossSpec` (``ESPO_SPEC`` in :mod:`~verl_espo.core.espo`, ...).

:func:`verl_espo.loss_inputs.loss_specs` imports every module here to read the declarations, so the runner, the
report and the comparison know the losses without importing veRL. Nothing here imports veRL.
"""
