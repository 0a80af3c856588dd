"""Score a candidate's approximate(x) against sin(x) on [0, pi]: -mean squared error."""
import importlib.util
import json
import math
import sys


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    xs = [math.pi * i / 199 for i in range(200)]
    errors = []
    for x in xs:
        y = module.approximate(x)
        if not isinstance(y, (int, float)) or not math.isfinite(y):
            raise ValueError(f"approximate({x:.4f}) returned {y!r}, not a finite number")
        errors.append((y - math.sin(x)) ** 2)
    mse = sum(errors) / len(errors)
    return {"score": -mse, "metrics": {"mse": mse, "max_error": math.sqrt(max(errors))}}


if __name__ == "__main__":
    print(json.dumps(evaluate(sys.argv[1])))
