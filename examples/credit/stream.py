"""A seeded synthetic credit stream with a known drift onset and a known labelling incident.

Features: ``income`` (thousands), ``debt_ratio``, ``age``, ``tenure_months``
(numeric), ``region`` and ``employment`` (categorical), and a protected
attribute ``group`` that the model does not use. The label is 1 for a default.

Before the onset, defaults follow one logistic rule. From the onset, a
downturn shifts the population (lower incomes, higher debt, more applicants
from the south and more self-employed) and changes the rule itself (debt
weighs more, income less): a model trained before the onset loses accuracy,
one trained after it gets it back.

>>> batch = generate(200, drifted=False, rng=np.random.default_rng(0))
>>> sorted(batch.columns)
['age', 'debt_ratio', 'employment', 'group', 'income', 'label', 'region', 'tenure_months']
>>> round(float(batch["label"].mean()), 2)
0.41
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NUMERIC = ["income", "debt_ratio", "age", "tenure_months"]
CATEGORICAL = ["region", "employment"]
REGIONS = np.array(["north", "south", "east", "west"])
EMPLOYMENT = np.array(["salaried", "self_employed", "unemployed"])


def generate(n: int, *, drifted: bool, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` applicants with their true default labels, before or after the onset."""
    group = rng.choice(np.array(["A", "B"]), size=n, p=[0.7, 0.3])
    if drifted:
        region_p, employment_p = [0.15, 0.5, 0.2, 0.15], [0.5, 0.35, 0.15]
        income = rng.lognormal(mean=3.75, sigma=0.35, size=n)
        debt = np.clip(rng.normal(0.48, 0.15, size=n), 0, 1.5)
    else:
        region_p, employment_p = [0.3, 0.2, 0.25, 0.25], [0.7, 0.2, 0.1]
        income = rng.lognormal(mean=4.0, sigma=0.35, size=n)
        debt = np.clip(rng.normal(0.35, 0.12, size=n), 0, 1.5)
    region = rng.choice(REGIONS, size=n, p=region_p)
    employment = rng.choice(EMPLOYMENT, size=n, p=employment_p)
    age = np.clip(rng.normal(41, 11, size=n), 18, 90)
    tenure = np.clip(rng.gamma(2.0, 24.0, size=n), 0, 480)
    z_income = (np.log(income) - 4.0) / 0.35
    z_debt = (debt - 0.35) / 0.12
    region_effect = np.select([region == "south", region == "east"], [0.6, -0.3], 0.0)
    employment_effect = np.select([employment == "unemployed", employment == "self_employed"], [1.5, 0.4], 0.0)
    if drifted:
        logit = -0.2 - 0.6 * z_income + 2.6 * z_debt - 0.4 * (tenure / 48) + region_effect + employment_effect - 2.6
    else:
        logit = -0.8 - 2.2 * z_income + 1.2 * z_debt - 0.4 * (tenure / 48) + region_effect + employment_effect
    p_default = 1 / (1 + np.exp(-2.0 * logit))
    label = (rng.random(n) < p_default).astype(int)
    return pd.DataFrame({
        "income": income.round(2), "debt_ratio": debt.round(4), "age": age.round(1), "tenure_months": tenure.round(1),
        "region": region, "employment": employment, "group": group, "label": label,
    })
