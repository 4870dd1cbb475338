"""The H2MV hybrid model: networks that predict the bucket's coefficients, its loss."""
