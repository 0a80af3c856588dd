def helper(xs):
    return sorted(xs)

# EVOLVE-BLOCK-START
def solve(xs):
    return sorted(xs)
# EVOLVE-BLOCK-END
