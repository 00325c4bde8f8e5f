"""Triton kernels. Import only when triton is importable (see smoothkern.backends.triton)."""
