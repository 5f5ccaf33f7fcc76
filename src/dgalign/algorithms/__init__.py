"""Registered algorithms. `get(name)` returns the class, `names()` lists them.

Importing this package registers every algorithm module below.
"""

from dgalign.algorithms import erm  # noqa: F401  (registers ERM)

# isort: off
# The baseline zoo, registered in the order `dgalign algorithms` lists it.
from dgalign.algorithms import invariance  # noqa: F401  (IRM, VREx, GroupDRO)
from dgalign.algorithms import gradient_matching  # noqa: F401  (IGA, Fish, Fishr)
from dgalign.algorithms import gradient_agreement  # noqa: F401  (ANDMask, SANDMask, PCGrad)
from dgalign.algorithms import meta  # noqa: F401  (MLDG, ARM)
from dgalign.algorithms import feature_alignment  # noqa: F401  (CORAL, MMD)
from dgalign.algorithms import adversarial  # noqa: F401  (DANN, CDANN)
from dgalign.algorithms import marginal_transfer  # noqa: F401  (MTL)
from dgalign.algorithms import style  # noqa: F401  (SagNet)
from dgalign.algorithms import regularization  # noqa: F401  (RSC, SelfReg, SD)
from dgalign.algorithms import augmentation  # noqa: F401  (Mixup, ManifoldMixup, MixStyle)
from dgalign.algorithms import hessian  # noqa: F401  (HGP, Hutchinson, HessianDiag)
from dgalign.algorithms import cma  # noqa: F401  (CMA)
from dgalign.algorithms import fgmix  # noqa: F401  (FGMix)
from dgalign.algorithms import ermpp  # noqa: F401  (ERMPlusPlus)
from dgalign.algorithms import transfer  # noqa: F401  (TRM, Transfer)
from dgalign.algorithms import bottleneck  # noqa: F401  (IB_ERM, IB_IRM, CAD, CondCAD)
from dgalign.algorithms import causal  # noqa: F401  (CausIRL_CORAL, CausIRL_MMD)
from dgalign.algorithms import risk_distribution  # noqa: F401  (EQRM, RDM)
from dgalign.algorithms import disentangle  # noqa: F401  (ADRMX)
from dgalign.algorithms import uniform  # noqa: F401  (URM)
from dgalign.algorithms import glsd  # noqa: F401  (GLSD_SSD, GLSD_FSD)
from dgalign.algorithms import normalization  # noqa: F401  (CNSN)
from dgalign.algorithms import meta_mixup  # noqa: F401  (MetaMixup)
from dgalign.algorithms import novel_domains  # noqa: F401  (L2AOT)
from dgalign.algorithms import disentangled_generation  # noqa: F401  (DDG)

# isort: on
from dgalign.algorithms.base import Algorithm, FeaturizerClassifier, Minibatches
from dgalign.algorithms.registry import ALGORITHMS, get, names, register

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "FeaturizerClassifier",
    "Minibatches",
    "get",
    "names",
    "register",
]
