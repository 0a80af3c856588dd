# EVOLVE-BLOCK-START
def score(xs):
    total = 0
    for x in xs:
        total += x
    best = 0
    for x in xs:
        total += x
    return total
# EVOLVE-BLOCK-END
