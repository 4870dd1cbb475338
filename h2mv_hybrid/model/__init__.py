"""The H2MV hybrid: networks that predict the bucket's coefficients, their scans, the loss.

``networks`` (the settings record, the static module, :class:`HybridH2MV`), ``scans``
(how the recurrence runs over time), ``feedback`` (the fused state-feedback op),
``losses`` (the multi-constraint loss), ``metrics`` and ``module`` (the LightningModule).
"""
