import re

# EVOLVE-BLOCK-START
def clean(text):
    return re.sub(r"(\d+)\.(\d*)$", r"\1", text)
# EVOLVE-BLOCK-END
