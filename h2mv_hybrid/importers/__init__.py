"""Importers: real data sets into the H2MV store schema (``h2mv import basins|camels|netcdf``)."""
