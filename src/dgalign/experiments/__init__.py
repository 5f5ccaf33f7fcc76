"""Paper reproductions that do not fit the DomainBed training loop.

`cmnist_*`: the IRM Colored MNIST protocol of the Hessian-alignment paper (Hemati et al.,
2023, Tables 2, 3, 5, 7, 8 and Figs 3-5; docs/protocols.md section 1), with all restarts of a method
trained at once as one batched model (`cmnist_model`). `fgsm`: the FGSM robustness curve.
The command line is `dgalign reproduce cmnist` (`dgalign.cli.reproduce_cmd`).
"""
