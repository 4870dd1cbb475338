"""Alternate heads: pure-learning models trained through the same CLI, CV and writers.

Each is a :class:`~h2mv_hybrid.heads.base.Task`, like the hybrid:

- :class:`~h2mv_hybrid.heads.phy_lstm.SoilMoistureLSTM`: LSTM, PHY-LSTM and PHYs-LSTM
  (Li et al., monotonic water-balance losses);
- :class:`~h2mv_hybrid.heads.multitask_lstm.MultiTaskLSTM`: the multi-task LSTM with a
  fixed or learned water balance (Yan et al. 2026);
- :class:`~h2mv_hybrid.heads.cnn_lstm.PatchCNNLSTM`: the CNN-LSTM with a Richards-equation
  loss (Zhang et al. 2025).

Their physics terms live in :mod:`process_layers` (``monotonic``, ``layered_balance``,
``richards``); :mod:`~h2mv_hybrid.heads.daily_inputs` standardizes their daily inputs.
"""
