"""URM: bounded features, uniform noise in the same box, the adversarial objective."""

import copy

import torch
import torch.nn.functional as F


def test_features_and_noise_share_the_activation_box(tiny, tiny_data):
    data = tiny_data()
    for output, (lo, hi) in (("tanh", (-1.0, 1.0)), ("relu", (0.0, 1.0))):
        algorithm = tiny("URM", urm_generator_output=output)
        z = algorithm.featurizer(data[0][0] * 50)
        u = algorithm.noise(torch.zeros(2000, 3, dtype=torch.float64))
        assert z.min() >= lo and (output == "relu" or z.max() <= hi)
        assert lo <= u.min() < lo + 0.01 and hi - 0.01 < u.max() < hi


def test_network_fools_the_discriminator_and_the_discriminator_learns(tiny, tiny_data):
    """loss = CE + lambda BCE(D(z), 1) before the steps. Mutation caught: target 0 for the
    fooling term (the network would help the discriminator)."""
    data = tiny_data()
    algorithm = tiny("URM", urm_adv_lambda=0.2)
    frozen = copy.deepcopy(algorithm)
    x = torch.cat([x for x, _ in data])
    y = torch.cat([y for _, y in data])
    with torch.no_grad():
        z = frozen.featurizer(x)
        ce = F.cross_entropy(frozen.classifier(z), y)
        fool = F.binary_cross_entropy_with_logits(
            frozen.discriminator(z).squeeze(1), torch.ones(len(z), dtype=z.dtype)
        )
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["loss"]), (ce + 0.2 * fool).item())
    torch.testing.assert_close(float(logs["nll"]), ce.item())
