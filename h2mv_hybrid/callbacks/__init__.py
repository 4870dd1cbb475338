"""Lightning callbacks: the zarr prediction writer and the end-of-fit report."""
