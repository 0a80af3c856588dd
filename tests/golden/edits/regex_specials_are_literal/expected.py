import re

# EVOLVE-BLOCK-START
def clean(text):
    return re.sub(r"(\d+)\.(\d*)$", r"$1.\2 \\g<0> .*", text)
# EVOLVE-BLOCK-END
