"""The networks stage: the network catalog (labels, families, which settings may be chosen per
network), the networks themselves (models/: one builder each, a registry whose error lists the
choices) and the methods without training (the floors and the caliper reader)."""
