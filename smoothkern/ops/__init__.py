"""The two ops that are not the model, one module each, and the kernel sets that run them.

* :mod:`.perturb`: noisy copies of the inputs (contract, checks, reference, fake kernel, wrapper
  of ``torch.ops.smoothkern.perturb``);
* :mod:`.accumulate`: the running statistics' one-read update (the same, for ``accumulate_``);
* :mod:`.backends`: the kernel sets as a priority table, pass strategies, ``backend=`` names;
* :mod:`.triton`: the Triton kernels; :mod:`.extension`: loads the C++/CUDA ops (``csrc/``).

Importing this package imports none of them.
"""
