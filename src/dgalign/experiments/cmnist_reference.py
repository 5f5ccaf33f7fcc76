"""The paper's Colored MNIST numbers (Hemati et al. 2023; docs/protocols.md section 1), as data.

`PAPER[variant][method] = (train mean, train std, test mean, test std)`, accuracies in percent,
mean +- std over 10 restarts; variant "balanced" (Tables 2, 7) or "labelshift" (Tables 3, 8).
`GRAY`: gray-test accuracies from Fishr's README. `TIME_100_STEPS`: Table 5, seconds per 100
steps (the authors' scripts computed every penalty each step, so only loosely comparable).
"""

from __future__ import annotations

PAPER: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "balanced": {
        "ERM": (86.4, 0.2, 14.0, 0.7),
        "IRM": (71.0, 0.5, 65.6, 1.8),
        "VREx": (71.7, 1.5, 67.2, 1.5),
        "Fishr": (71.0, 0.9, 69.5, 1.0),
        "HGP": (71.0, 1.5, 69.4, 1.3),
        "Hutchinson": (61.7, 1.9, 74.0, 1.2),
        "HGP(alpha=0)": (70.6, 1.8, 69.3, 1.2),
        "HGP(beta=0)": (78.9, 0.3, 53.3, 1.7),
        "Hutchinson(alpha=0)": (70.6, 1.8, 69.3, 1.2),
        "Hutchinson(beta=0)": (84.9, 0.1, 9.8, 0.2),
    },
    "labelshift": {
        "ERM": (86.4, 0.1, 16.7, 0.1),
        "IRM": (84.9, 0.1, 14.3, 1.4),
        "VREx": (83.3, 0.2, 35.1, 1.2),
        "Fishr": (75.7, 2.7, 35.5, 5.3),
        "HGP": (83.0, 0.2, 30.0, 0.9),
        "Hutchinson": (79.4, 0.3, 47.7, 1.4),
        "HGP(alpha=0)": (83.2, 0.4, 29.7, 1.7),
        "HGP(beta=0)": (84.3, 0.1, 20.4, 1.0),
        "Hutchinson(alpha=0)": (83.2, 0.4, 29.7, 1.7),
        "Hutchinson(beta=0)": (84.9, 0.1, 9.8, 0.2),
    },
}
GRAY = {"ERM": 71.0, "IRM": 66.1, "VREx": 68.6, "Fishr": 70.2}
TIME_100_STEPS = {
    "ERM": 15.3,
    "CORAL": 32.0,
    "VREx": 34.1,
    "IRM": 27.0,
    "GroupDRO": 32.8,
    "Fishr": 25.3,
    "HGP": 39.5,
    "Hutchinson": 62.4,
}
