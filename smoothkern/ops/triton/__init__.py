"""Triton kernels, one op per module (perturb, accumulate), imported by the "triton" backend on
first use; ``launch`` (grids, device, interpreter switch) is pure Python and imports no triton."""
