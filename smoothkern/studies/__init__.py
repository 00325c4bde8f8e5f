"""The course studies, beside the library: the out-of-distribution study (:mod:`.ood`), input
optimisation (:mod:`.optimize`), the digit shifts (:mod:`.shifts`), the MNIST-C loader
(:mod:`.mnist_c`), the digit CNN's training (:mod:`.train`, :mod:`.train_digits`) and the demo
(:mod:`.demo`).

They use the library; the library never imports them.
"""
