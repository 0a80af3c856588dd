"""Approximate sin(x) on [0, pi] with a polynomial (edit the evolve block)."""

# EVOLVE-BLOCK-START
C0 = 0.0
C1 = 0.8
C2 = -0.1
C3 = -0.05


def approximate(x):
    return C0 + C1 * x + C2 * x * x + C3 * x * x * x
# EVOLVE-BLOCK-END
