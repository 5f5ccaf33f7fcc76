"""GLSD's own hyper-parameters (`dgalign.algorithms.glsd`). DomainBed's `hparams_registry`
entries for GLSD could not be read from the public copies available here, so the defaults are
ours and the random search keeps each at its default (docs/parity.md); the shared `lr`,
`weight_decay` and `batch_size` are drawn as for every algorithm."""

from __future__ import annotations

from dgalign.hparams import (
    HParam,
    boolean,
    const,
    finite,
    integer,
    interval,
    nonnegative,
    one_of,
    positive,
)

REGULARIZERS = ("imagined_domains", "bestworst", "imagined_domains&bestworst", "VREx")

GLSD_HPARAMS = (
    HParam(
        "glsd_K",
        4,
        const(4),
        "affine combinations K: K - 1 random ones plus the worst one",
        integer(1),
    ),
    HParam(
        "glsd_dominate_all_domains",
        False,
        const(False),
        "add the training domains themselves to the combinations",
        boolean(),
    ),
    HParam(
        "glsd_affine_hull_gamma",
        1.0,
        const(1.0),
        "gamma: affine weights >= -gamma / sqrt(n domains)",
        nonnegative(),
    ),
    HParam(
        "glsd_update_worst_env_every_steps",
        10,
        const(10),
        "steps between estimates of the worst combination",
        integer(1),
    ),
    HParam(
        "glsd_lambda_alpha_div",
        2.0,
        const(2.0),
        "blend to a new estimate over period / this many steps",
        positive(),
    ),
    HParam(
        "glsd_margin_steps",
        5000,
        const(5000),
        "T of the margin schedule m_t = m_(t-1) (1 - min(t / T, 1))",
        integer(1),
    ),
    HParam(
        "glsd_regularizer",
        "imagined_domains",
        const("imagined_domains"),
        "penalty on the combinations' distributions",
        one_of(*REGULARIZERS),
    ),
    HParam(
        "glsd_utype",
        -1,
        const(-1),
        "utility of -CE in the penalty: -1 identity, 0 .. 5 (dominance.utility)",
        integer(-1, 5),
    ),
    HParam(
        "glsd_u_tau",
        0.0,
        const(0.0),
        "tau of utilities 2, 3, 4",
        finite(),
    ),
    HParam(
        "glsd_penalty_lambda_min",
        0.1,
        const(0.1),
        "penalty weight before the warm-up, and its floor after",
        nonnegative(),
    ),
    HParam(
        "glsd_penalty_lambda_max",
        1.0,
        const(1.0),
        "penalty weight added by the ramp after the warm-up",
        nonnegative(),
    ),
    HParam(
        "glsd_penalty_tau",
        1000.0,
        const(1000.0),
        "time scale of the ramp (steps)",
        positive(),
    ),
    HParam(
        "glsd_penalty_power",
        1.0,
        const(1.0),
        "power of the ramp",
        positive(),
    ),
    HParam(
        "glsd_lossbalancer_warmup",
        500,
        const(500),
        "steps before the loss balancing (the optimizer is re-created there)",
        integer(0),
    ),
    HParam(
        "glsd_lossbalancer_alpha",
        0.99,
        const(0.99),
        "moving-average factor of the loss balancing",
        interval(0.0, 1.0, hi_open=True),
    ),
    HParam(
        "glsd_optimizer",
        "adam",
        const("adam"),
        "adam or adamw",
        one_of("adam", "adamw"),
    ),
)
