"""Triton kernels, one op per module (perturb, accumulate), imported by the "triton" kernel set
(:mod:`smoothkern.ops.backends`) on first use; ``launch`` (grids, device, interpreter switch) is
pure Python and imports no triton."""
