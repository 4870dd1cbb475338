"""The data layer: the H2MV store schema, the synthetic twin, spatial folds, the DataModule."""
