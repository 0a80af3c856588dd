"""Experiment folders laid out for ASI-Evolve, OpenEvolve and ShinkaEvolve load as they are, with notices."""
from __future__ import annotations

import json

import pytest

from evolveflow.experiment import GENERIC_PROBLEM, ExperimentError, experiment_config_file, load_experiment
from evolveflow.prompts import load_templates
from storage.asi_cognition import read_cognition_script, read_cognition_store
from tests.support.peer_folders import (ASI_ROOT_CONFIG, CONSTANT_PROGRAM, asi_folder, openevolve_folder,
                                        shinka_folder, write)


def test_asi_folder(tmp_path):
    exp_dir = asi_folder(tmp_path)
    exp = load_experiment("circle_packing_demo", tmp_path)
    assert exp.initial_path == exp_dir / "initial_program" and exp.initial_code == CONSTANT_PROGRAM
    assert exp.evaluator_path == exp_dir / "eval.sh"  # eval.sh before the evaluator.py it calls
    assert exp.problem == "Make value() return 0.7.\n"
    assert exp.config.evaluation.contract == "asi"
    notices = "\n".join(exp.notices)
    assert "experiments/circle_packing_demo/config.yaml is an ASI-Evolve config (evaluator contract asi)" in notices
    assert "initial program: initial_program (no initial_program.py)" in notices
    assert ("init_cognition.py: 3 knowledge items read without running it; knowledge built by code (1 place in the script, each possibly several items) was skipped "
            "(add it to knowledge/ instead); all loaded into the knowledge store at start") in notices
    assert ("prompts/{analyzer.jinja2,researcher.jinja2} are ASI-Evolve templates and are not used: evolveflow's "
            "own prompts are (yours go in prompts/{system,propose,analyze}.md)") in notices
    assert [item["title"] for item in exp.knowledge_items] == [
        "Circle Packing Theory", "Optimization Techniques", "For n=26 the best known sum of radii ..."]


def test_a_foreign_root_config_does_not_choose_the_contract(tmp_path):
    write(tmp_path / "config.yaml", ASI_ROOT_CONFIG)
    exp_dir = asi_folder(tmp_path)
    (exp_dir / "config.yaml").unlink()
    exp = load_experiment("circle_packing_demo", tmp_path)
    assert exp.config.evaluation.contract == "auto"  # the adapters detect it from the folder
    assert exp.config.evaluation.timeout_s == 1800
    assert exp.notices[0].startswith("config.yaml is an ASI-Evolve config: using ")
    ours = write(tmp_path / "ours.yaml", "evaluation:\n  contract: native\n")
    (exp_dir / "config.yaml").write_text("pipeline:\n  engineer_timeout: 30\n")
    assert load_experiment("circle_packing_demo", tmp_path, ours).config.evaluation.contract == "native"


def test_openevolve_folder(tmp_path):
    exp_dir = openevolve_folder(tmp_path)
    exp = load_experiment("circle_packing", tmp_path)
    assert exp.initial_path == exp_dir / "initial_program.py" and exp.evaluator_path == exp_dir / "evaluator.py"
    assert exp.config.database.sampling.island.num_islands == 4  # phase 1, not phase 2
    assert exp.config.evaluation.contract == "openevolve"
    assert exp.problem.startswith("You are an expert mathematician")  # prompt.system_message, not README.md
    assert exp.notices[0] == ("config: config_phase_1.yaml, the first of 2 candidates (pass another with "
                              "--config, e.g. --config experiments/circle_packing/config_phase_2.yaml)")
    assert "problem statement: prompts.system_message (no input.md)" in exp.notices
    phase_2 = load_experiment("circle_packing", tmp_path, exp_dir / "config_phase_2.yaml")
    assert phase_2.config.database.sampling.island.num_islands == 5


def test_shinka_folder(tmp_path):
    exp_dir = shinka_folder(tmp_path)
    assert experiment_config_file(exp_dir) == (exp_dir / "shinka_small.yaml",
                                               [exp_dir / "shinka_long.yaml", exp_dir / "shinka_medium.yaml"])
    exp = load_experiment("circle_packing_shinka", tmp_path)
    assert exp.initial_path == exp_dir / "initial.py"  # evo_config.init_program_path
    assert exp.evaluator_path == exp_dir / "evaluate.py"
    assert exp.config.evaluation.contract == "shinka"
    assert exp.problem == "You are an expert in numerical tuning. Make run_value() return 0.7."
    assert "problem statement: the task system message in run_evo.py (no input.md)" in exp.notices


def test_initial_program_under_peer_names_only_when_ours_is_the_default(tmp_path):
    exp_dir = tmp_path / "experiments" / "x"
    write(exp_dir / "evaluator.py", "def evaluate(p):\n    return {'score': 1}\n")
    write(exp_dir / "initial.py", "a = 1\n")
    write(exp_dir / "initial_program.rs", "fn main() {}\n")
    assert load_experiment("x", tmp_path).initial_path == exp_dir / "initial.py"
    (exp_dir / "initial.py").unlink()
    assert load_experiment("x", tmp_path).initial_path == exp_dir / "initial_program.rs"
    write(exp_dir / "config.yaml", "initial_program: seed.py\n")
    with pytest.raises(ExperimentError, match=r"initial program seed.py not found$"):
        load_experiment("x", tmp_path)
    (exp_dir / "config.yaml").unlink()
    (exp_dir / "initial_program.rs").unlink()
    with pytest.raises(ExperimentError, match=r"initial_program.py not found \(nor initial_program, initial"):
        load_experiment("x", tmp_path)


def test_problem_statement_falls_back_without_failing(tmp_path):
    exp_dir = tmp_path / "experiments" / "x"
    write(exp_dir / "initial_program.py", "a = 1\n")
    write(exp_dir / "evaluator.py", "def evaluate(p):\n    return {'score': 1}\n")
    exp = load_experiment("x", tmp_path)
    assert exp.problem == GENERIC_PROBLEM
    assert exp.notices[0].startswith("problem statement: a generic one")
    write(exp_dir / "README.md", "# X\nMake a bigger.\n")
    assert load_experiment("x", tmp_path).problem == "# X\nMake a bigger.\n"
    write(exp_dir / "config.yaml", "prompts:\n  system_message: Make a as big as possible.\n")
    assert load_experiment("x", tmp_path).problem == "Make a as big as possible."
    write(exp_dir / "input.md", "The real statement.\n")
    exp = load_experiment("x", tmp_path)
    assert exp.problem == "The real statement.\n" and exp.notices == ()


def test_init_cognition_literals_and_code_built_items(tmp_path):
    script = write(tmp_path / "init_cognition.py", '''
from cognition.store import CognitionStore
store = CognitionStore(storage_dir="cognition_data")
store.add([
    {"title": "Continuous batching", "content": "Orca-style iteration-level scheduling keeps GPUs busy."},
    {"content": "  PagedAttention stores the KV cache in fixed-size blocks, like virtual memory pages.  "},
    {"title": "Computed", "content": "x" * 3},
])
notes = [{"role": "user", "content": "not knowledge"}]
items = [CognitionItem(**spec) for spec in specs]
CognitionItem(content="", source="empty")
''')
    read = read_cognition_script(script)
    assert read.items == (
        {"title": "Continuous batching", "content": "Orca-style iteration-level scheduling keeps GPUs busy.",
         "source": "init_cognition.py"},
        {"title": "PagedAttention stores the KV cache in fixed-size blocks, ...",
         "content": "PagedAttention stores the KV cache in fixed-size blocks, like virtual memory pages.",
         "source": "init_cognition.py"},
    )
    assert read.skipped == 2 and read.problem is None  # "x" * 3 and CognitionItem(**spec)


def test_an_unparsable_init_cognition_is_a_notice_not_an_error(tmp_path):
    exp_dir = asi_folder(tmp_path)
    (exp_dir / "init_cognition.py").write_text("def broken(:\n")
    exp = load_experiment("circle_packing_demo", tmp_path)
    assert exp.knowledge_items == ()
    assert any(n.startswith("init_cognition.py could not be parsed (") and "its knowledge is not loaded" in n
               for n in exp.notices)


def test_what_running_init_cognition_left_is_read_too(tmp_path):
    exp_dir = asi_folder(tmp_path)
    store = {"items": {"a1": {"id": "a1", "content": "Consider symmetry when placing circles.", "source": "symmetry",
                              "metadata": {}},
                       "b2": {"id": "b2", "content": "", "source": "empty"}},
             "str_to_int": {}, "int_to_str": {}, "next_int_id": 2}
    write(exp_dir / "cognition_data" / "cognition.json", json.dumps(store))
    assert read_cognition_store(exp_dir / "cognition_data" / "cognition.json") == (
        {"title": "symmetry", "content": "Consider symmetry when placing circles.",
         "source": "cognition_data/cognition.json"},)
    exp = load_experiment("circle_packing_demo", tmp_path)
    assert len(exp.knowledge_items) == 4
    assert any("cognition_data/cognition.json: 1 knowledge items" in n for n in exp.notices)


def test_jinja_only_prompt_dir_keeps_our_templates_and_system_message_replaces_ours(tmp_path):
    write(tmp_path / "researcher.jinja2", "{{ task_description }}")
    assert load_templates(tmp_path) == load_templates()
    replaced = load_templates(tmp_path, "You are an expert mathematician.")
    assert replaced.system == "You are an expert mathematician."
    assert (replaced.propose, replaced.analyze) == (load_templates().propose, load_templates().analyze)
    assert load_templates(None, "  \n").system == load_templates().system


def test_shinka_task_message_given_as_a_keyword_in_run_evo(tmp_path):
    from evolveflow.experiment import _shinka_task_message

    (tmp_path / "run_evo.py").write_text(
        "from shinka.core import EvolutionConfig\n"
        "def main():\n"
        "    evo_config = EvolutionConfig(task_sys_msg=\"Pack circles tightly.\", num_generations=10)\n")
    assert _shinka_task_message(tmp_path) == "Pack circles tightly."


def test_the_candidate_file_keeps_the_initial_programs_extension(tmp_path):
    from evolveflow.experiment import load_experiment

    exp_dir = tmp_path / "experiments" / "sorter"
    exp_dir.mkdir(parents=True)
    (exp_dir / "initial_program.rs").write_text("fn main() {}\n")
    (exp_dir / "evaluator.py").write_text("def evaluate(path):\n    return {'score': 1.0}\n")
    assert load_experiment("sorter", tmp_path).program_file == "program.rs"
    (exp_dir / "config.yaml").write_text("evaluation:\n  program_file: main.rs\n")
    assert load_experiment("sorter", tmp_path).program_file == "main.rs"
