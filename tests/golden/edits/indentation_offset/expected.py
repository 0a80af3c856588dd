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
        angle = 2 * math.pi * i / n

        centres.append((0.5 + 0.3 * math.cos(angle), 0.5 + 0.3 * math.sin(angle)))
    return centres
# EVOLVE-BLOCK-END


def run(n=5):
    return construct(n), radius_for(n)
