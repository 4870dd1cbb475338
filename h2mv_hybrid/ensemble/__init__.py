"""Cross-validation ensembles: training the K members and their prediction store."""

from h2mv_hybrid.ensemble.cv import cross_validate, member_config
from h2mv_hybrid.ensemble.store import metadata_checksum, predict_ensemble

__all__ = ["cross_validate", "member_config", "metadata_checksum", "predict_ensemble"]
