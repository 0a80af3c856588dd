"""Pack circles into a unit square."""
import math

# EVOLVE-BLOCK-START
def radius_for(n):
    """Radius of n equal circles."""
    base = 0.5 / math.sqrt(n)
    return base * 0.9


def construct(n):
    centres = []
    step = 1.0 / n
    for i in range(n):
        centres.append((step * i, 0.5))
    return centres
# EVOLVE-BLOCK-END


def run(n=5):
    return construct(n), radius_for(n)
