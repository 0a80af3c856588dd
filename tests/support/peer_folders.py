"""Experiment folders and config files as ASI-Evolve, OpenEvolve and ShinkaEvolve lay them out.

Written from the research notes on each framework (their published example folders), not copied.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

# ASI-Evolve's repository-root config.yaml: global defaults with template placeholders.
ASI_ROOT_CONFIG = r"""
experiment_name: "default"
api:
  provider: "openai"
  base_url: "your_base_url"
  api_key: "your_api_key"
  model: "your_model"
  timeout: 300
  retry_times: 3
  retry_delay: 5
  temperature: 0
  top_p: 0.8
  max_tokens: 16384
  seed: 42
logging:
  level: "INFO"
  console: true
  wandb:
    enabled: true
    offline: false
    project: "evolve"
    entity: ""
pipeline:
  agents: {manager: false, researcher: true, engineer: true, analyzer: true}
  researcher:
    diff_based_evolution: true
    diff_pattern: "<<<<<<< SEARCH\\n(.*?)=======\\n(.*?)>>>>>>> REPLACE"
    max_code_length: 10000
  max_retries: {researcher: 3, engineer: 2, analyzer: 2}
  engineer_timeout: 1800
  parallel:
    num_workers: 1
  sample_n: 3
  judge: {enabled: false, ratio: 0.2}
cognition:
  storage_dir: "cognition_data"
  embedding: {model: "sentence-transformers/all-MiniLM-L6-v2", dimension: 384}
  faiss: {index_type: "IP"}
  retrieval: {top_k: 3, score_threshold: 0.3}
  web_search: {enabled: false}
database:
  storage_dir: "database_data"
  max_size: null
  embedding: {model: "sentence-transformers/all-MiniLM-L6-v2", dimension: 384}
  sampling:
    algorithm: "ucb1"
    ucb1_c: 1.414
    island: {num_islands: 5, migration_interval: 10, migration_rate: 0.1, exploration_ratio: 0.2,
             exploitation_ratio: 0.3}
  faiss: {index_type: "IP"}
"""

# ASI-Evolve's experiments/circle_packing_demo/config.yaml (an sglang server on localhost).
ASI_DEMO_CONFIG = r"""
experiment_name: "circle_packing_align_qwen_1"
api:
  provider: "sglang"
  base_url: "http://localhost:30032/v1"
  api_key: "EMPTY"
  model: "default"
  temperature: 0.6
  top_p: 0.95
  max_tokens: 65536
  seed: 42
  extra_body:
    chat_template_kwargs: {enable_thinking: true}
    top_k: 20
    min_p: 0
  timeout: 600
  retry_times: 3
  retry_delay: 5
logging:
  level: INFO
  console: true
  wandb: {enabled: true, offline: true, project: "evolve", entity: "someone"}
pipeline:
  agents: {manager: false, researcher: true, engineer: true, analyzer: true}
  researcher: {diff_based_evolution: false, max_code_length: 100000}
  max_retries: {researcher: 3, engineer: 2, analyzer: 2}
  engineer_timeout: 300
  parallel:
    num_workers: 4
  sample_n: 3
  judge: {enabled: false, ratio: 0.2}
cognition:
  storage_dir: cognition_data
  embedding: {model: sentence-transformers/all-MiniLM-L6-v2, dimension: 384}
  faiss: {index_type: IP}
  retrieval: {top_k: 5, score_threshold: 0.4}
  web_search: {enabled: false}
database:
  storage_dir: database_data
  max_size: 70
  embedding: {model: sentence-transformers/all-MiniLM-L6-v2, dimension: 384}
  sampling:
    algorithm: "island"
    island:
      num_islands: 5
      migration_interval: 10
      migration_rate: 0.1
      exploration_ratio: 0.2
      exploitation_ratio: 0.6
      feature_dimensions: ["complexity", "diversity"]
      feature_bins: 10
  faiss: {index_type: IP}
"""

# OpenEvolve's examples/circle_packing/config_phase_1.yaml (the legacy primary/secondary model form).
OPENEVOLVE_CONFIG = """
max_iterations: 100
checkpoint_interval: 10
log_level: "INFO"
llm:
  primary_model: "google/gemini-2.0-flash-001"
  primary_model_weight: 0.8
  secondary_model: "anthropic/claude-3.7-sonnet"
  secondary_model_weight: 0.2
  api_base: "https://openrouter.ai/api/v1"
  temperature: 0.7
  top_p: 0.95
  max_tokens: 8192
  timeout: 600
prompt:
  system_message: |
    You are an expert mathematician specializing in circle packing problems and computational
    geometry. Your task is to improve a constructor function that places 26 circles in a unit square.
  num_top_programs: 3
  use_template_stochasticity: true
database:
  population_size: 60
  archive_size: 25
  num_islands: 4
  elite_selection_ratio: 0.3
  exploitation_ratio: 0.7
evaluator:
  timeout: 60
  cascade_evaluation: true
  cascade_thresholds: [0.5, 0.75]
  parallel_evaluations: 4
  use_llm_feedback: false
diff_based_evolution: false
allow_full_rewrites: true
"""

# ShinkaEvolve's examples/circle_packing/shinka_small.yaml (the task message lives in run_evo.py).
SHINKA_CONFIG = """
max_evaluation_jobs: 2
max_proposal_jobs: 2
max_db_workers: 2
db_config:
  num_islands: 2
  archive_size: 40
  elite_selection_ratio: 0.3
  num_archive_inspirations: 4
  num_top_k_inspirations: 2
  migration_interval: 10
  migration_rate: 0.1
  island_elitism: true
  enforce_island_separation: true
  parent_selection_strategy: "weighted"
  parent_selection_lambda: 10.0
  archive_selection_strategy: "crowding"
  island_selection_strategy: "equal"
  archive_criteria: {combined_score: 1.0, loc: -0.3}
evo_config:
  patch_types: ["diff", "full", "cross"]
  patch_type_probs: [0.6, 0.3, 0.1]
  num_generations: 100
  max_api_costs: 10.0
  max_patch_resamples: 3
  max_patch_attempts: 3
  job_type: "local"
  language: "python"
  llm_models: ["gpt-4.1-mini", "gpt-4.1-nano"]
  llm_kwargs:
    temperatures: [0.0, 0.5, 1.0]
    max_tokens: 16384
  embedding_model: "text-embedding-3-small"
  code_embed_sim_threshold: 0.995
  init_program_path: "initial.py"
  llm_dynamic_selection: ucb1
  results_dir: "results/results_circle_small"
"""

# A program in which only a constant matters: score 1 - |A - 0.7|, so the offline mutator can climb.
CONSTANT_PROGRAM = """\
# EVOLVE-BLOCK-START
A = 0.3
# EVOLVE-BLOCK-END


def value():
    return A
"""

# ASI-Evolve's demo eval.sh: no argument, the candidate is ./code, evaluator.py two levels up.
ASI_EVAL_SH = """\
set -e
STEP_DIR="$(pwd)"
if [[ "$STEP_DIR" == */steps/step_* ]]; then
    EXPERIMENT_DIR="$(dirname "$(dirname "$STEP_DIR")")"
else
    EXPERIMENT_DIR="$(dirname "$STEP_DIR")"
fi
python3 "${EXPERIMENT_DIR}/evaluator.py" "${STEP_DIR}/code" "${STEP_DIR}/results.json" >> "${STEP_DIR}/eval.log" 2>&1
exit 0
"""

ASI_EVALUATOR = """\
import json
import sys
import types

code_file, output_file = sys.argv[1], sys.argv[2]
program = types.ModuleType("program")
exec(open(code_file).read(), program.__dict__)
value = program.value()
score = 1.0 - abs(value - 0.7)
json.dump({"success": True, "eval_score": score, "value": value}, open(output_file, "w"))
"""

INIT_COGNITION = '''\
"""Seed the cognition store of the demo (ASI-Evolve's pattern)."""
import importlib.util
import sys
from pathlib import Path

project_root = Path(__file__).resolve().parent.parent.parent
spec = importlib.util.spec_from_file_location("Evolve", project_root / "__init__.py",
                                              submodule_search_locations=[str(project_root)])
from Evolve.cognition.cognition import Cognition
from Evolve.utils.structures import CognitionItem

EXTRA_TOPICS = ["symmetry", "annealing"]


def init_cognition():
    cog = Cognition(storage_dir=Path(__file__).parent / "cognition_data")
    cog.reset()
    knowledge = [
        CognitionItem(
            content="Hexagonal close packing reaches density pi/sqrt(12); near the walls it wastes space.",
            source="Circle Packing Theory",
            metadata={"topic": "hexagonal_packing", "importance": "critical"},
        ),
        CognitionItem("scipy.optimize.minimize with SLSQP handles the non-overlap constraints directly.",
                      "Optimization Techniques"),
        CognitionItem(content="For n=26 the best known sum of radii is about 2.635."),
    ]
    for topic in EXTRA_TOPICS:
        knowledge.append(CognitionItem(content=f"Consider {topic} when placing circles.", source=topic))
    cog.add_batch(knowledge)
    for query in ["hexagonal", "optimizer"]:
        print(cog.retrieve(query, top_k=2))


if __name__ == "__main__":
    init_cognition()
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text) if text.startswith("\n") else text)
    return path


def asi_folder(root: Path, name: str = "circle_packing_demo", config: str = ASI_DEMO_CONFIG) -> Path:
    """An ASI-Evolve experiment folder: initial_program without extension, eval.sh, knowledge script."""
    exp = root / "experiments" / name
    write(exp / "config.yaml", config)
    write(exp / "initial_program", CONSTANT_PROGRAM)
    write(exp / "input.md", "Make value() return 0.7.\n")
    write(exp / "eval.sh", ASI_EVAL_SH)
    write(exp / "evaluator.py", ASI_EVALUATOR)
    write(exp / "init_cognition.py", INIT_COGNITION)
    write(exp / "prompts" / "researcher.jinja2", "{{ task_description }}\n<name></name><motivation></motivation><code></code>\n")
    write(exp / "prompts" / "analyzer.jinja2", "{{ results }}\n<analysis></analysis>\n")
    return exp


def openevolve_folder(root: Path, name: str = "circle_packing") -> Path:
    """An OpenEvolve example folder: two phase configs, initial_program.py, evaluator.py, README.md."""
    exp = root / "experiments" / name
    write(exp / "config_phase_1.yaml", OPENEVOLVE_CONFIG)
    write(exp / "config_phase_2.yaml", OPENEVOLVE_CONFIG.replace("num_islands: 4", "num_islands: 5"))
    write(exp / "initial_program.py", CONSTANT_PROGRAM)
    write(exp / "evaluator.py", """\
import importlib.util

from openevolve.evaluation_result import EvaluationResult


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    value = program.value()
    return EvaluationResult(metrics={"combined_score": 1.0 - abs(value - 0.7)}, artifacts={"value": str(value)})
""")
    write(exp / "README.md", "# Circle packing\n\nRun with openevolve-run initial_program.py evaluator.py.\n")
    return exp


def shinka_folder(root: Path, name: str = "circle_packing_shinka") -> Path:
    """A ShinkaEvolve example folder: initial.py, evaluate.py, shinka_{small,medium,long}.yaml, run_evo.py."""
    exp = root / "experiments" / name
    for size in ("small", "medium", "long"):
        write(exp / f"shinka_{size}.yaml", SHINKA_CONFIG)
    write(exp / "initial.py", CONSTANT_PROGRAM.replace("def value", "def run_value"))
    write(exp / "evaluate.py", """\
import argparse

from shinka.core import run_shinka_eval


def aggregate(results):
    value = results[0]
    return {"combined_score": 1.0 - abs(value - 0.7), "public": {"value": value}, "private": {"raw": value}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--program_path", default="initial.py")
    parser.add_argument("--results_dir", default="results")
    args = parser.parse_args()
    run_shinka_eval(program_path=args.program_path, results_dir=args.results_dir, experiment_fn_name="run_value",
                    num_runs=1, get_experiment_kwargs=lambda i: {}, aggregate_metrics_fn=aggregate)
""")
    write(exp / "run_evo.py", '''\
from shinka.core import EvolutionConfig, ShinkaEvolveRunner

search_task_sys_msg = """You are an expert in numerical tuning. Make run_value() return 0.7."""

if __name__ == "__main__":
    pass
''')
    return exp
