"""Config files of ASI-Evolve, OpenEvolve and ShinkaEvolve: recognised, translated, one notice; ours stay strict."""
from __future__ import annotations

import pytest
import yaml

from evolveflow.config import Config, ConfigError, load_config, load_config_layers
from evolveflow.foreign_config import NATIVE_PATHS, NATIVE_TOP_LEVEL, detect, notice, translate
from tests.support.peer_folders import (ASI_DEMO_CONFIG, ASI_ROOT_CONFIG, OPENEVOLVE_CONFIG, SHINKA_CONFIG,
                                        write)


def test_our_top_level_keys_are_the_documented_ones():
    assert NATIVE_TOP_LEVEL == {"initial_program", "api", "pipeline", "database", "cognition", "evaluation",
                                "tasks", "storage", "stop", "dedup", "prompts", "alerts"}
    assert "database.sampling.island.num_islands" in NATIVE_PATHS and "api" not in NATIVE_PATHS


def test_a_complete_native_config_is_never_taken_for_a_foreign_one():
    full = Config().model_dump(mode="json")  # every key we have, with a value
    assert detect(full) is None and translate(full) is None
    assert detect({"api": {"model": "openai/gpt-4o", "api_key_env": "K"}, "pipeline": {"sample_n": 2}}) is None


def test_native_files_keep_strict_errors_naming_key_and_file(tmp_path):
    typo = write(tmp_path / "config.yaml", "pipeline:\n  sample_m: 3\nbanana: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config([typo])
    assert str(typo) in str(err.value)
    assert "unknown key 'pipeline.sample_m'" in str(err.value) and "unknown key 'banana'" in str(err.value)
    assert load_config_layers([write(tmp_path / "ok.yaml", "api:\n  temperature: 0.1\n")])[1] == []


def test_asi_demo_config_is_translated_key_by_key(tmp_path):
    path = write(tmp_path / "config.yaml", ASI_DEMO_CONFIG)
    config, foreign = load_config_layers([path])
    assert [f.translation.format for f in foreign] == ["ASI-Evolve"]
    assert (config.api.temperature, config.api.max_tokens, config.api.seed) == (0.6, 65536, 42)
    assert (config.api.timeout_s, config.api.num_retries, config.api.retry_backoff_s) == (600, 3, 5)
    assert config.evaluation.timeout_s == 300  # pipeline.engineer_timeout
    assert (config.pipeline.sample_n, config.pipeline.parallel.num_workers) == (3, 4)
    assert config.cognition.retrieval.top_k == 5
    assert config.database.sampling.algorithm == "island"
    island = config.database.sampling.island
    assert (island.num_islands, island.migration_interval) == (5, 10)
    # model "default" on a local sglang server is a placeholder: the offline model stays, and so
    # do our defaults for the endpoint and the key.
    assert config.api.model == "offline/mutator" and config.api.api_base is None and config.api.api_key_env is None


def test_asi_notice_is_one_line_listing_ignored_keys_once(tmp_path):
    translation = translate(yaml.safe_load(ASI_DEMO_CONFIG))
    text = notice(translation, "experiments/circle_packing_demo/config.yaml")
    assert "\n" not in text
    assert text.startswith("experiments/circle_packing_demo/config.yaml is an ASI-Evolve config "
                           "(evaluator contract asi): using api.temperature, ")
    assert "pipeline.engineer_timeout" in text.split("; ignoring")[0]
    ignored = text.split("; ignoring ")[1]
    assert ignored.startswith(f"{translation.ignored_count} keys (not an error): experiment_name, api.provider")
    for section in ("logging.*", "pipeline.agents.*", "api.extra_body.*", "database.faiss.index_type"):
        assert ignored.count(section) == 1
    assert translation.ignored_count == 42  # counted by hand from the file above
    assert "api.model 'default' is a placeholder" in text


def test_asi_root_config_with_placeholders_is_recognised(tmp_path):
    translation = translate(yaml.safe_load(ASI_ROOT_CONFIG))
    assert translation.format == "ASI-Evolve"
    assert translation.config["database"]["sampling"] == {
        "algorithm": "ucb1", "ucb_c": 1.414, "island": {"num_islands": 5, "migration_interval": 10}}
    assert translation.config["evaluation"] == {"timeout_s": 1800}
    assert "model" not in translation.config["api"] and "api_base" not in translation.config["api"]
    assert translation.origin["database.sampling.ucb_c"] == "database.sampling.ucb1_c"


def test_asi_key_reference_becomes_api_key_env_and_a_literal_key_is_never_copied():
    secret = "sk-live-0123456789abcdef"
    literal = translate({"experiment_name": "x", "api": {
        "model": "Qwen/Qwen3-8B", "base_url": "http://10.0.0.5:8000/v1", "api_key": secret}})
    assert literal.config["api"] == {"model": "openai/Qwen/Qwen3-8B", "api_base": "http://10.0.0.5:8000/v1"}
    text = notice(literal, "config.yaml")
    assert secret not in text and secret not in repr(literal)
    assert "api.api_key is a literal value: not copied" in text and "api.api_key_env" in text
    reference = translate({"experiment_name": "x", "api": {"model": "gpt-4o-mini", "api_key": "${OPENAI_API_KEY}"}})
    assert reference.config["api"] == {"model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}


def test_asi_markers_inside_our_top_level_sections_are_enough():
    # An experiment config that only overrides the evaluation timeout, ASI-style.
    translation = translate({"pipeline": {"engineer_timeout": 120, "sample_n": 2}})
    assert translation.format == "ASI-Evolve"
    assert translation.config == {"evaluation": {"timeout_s": 120}, "pipeline": {"sample_n": 2}}
    assert translation.ignored_count == 0 and "ignoring" not in notice(translation, "c.yaml")


def test_openevolve_config_is_translated(tmp_path):
    path = write(tmp_path / "config_phase_1.yaml", OPENEVOLVE_CONFIG)
    config, (foreign,) = load_config_layers([path])
    assert foreign.translation.format == "OpenEvolve" and foreign.translation.contract == "openevolve"
    assert config.api.model == "openai/google/gemini-2.0-flash-001"
    assert config.api.api_base == "https://openrouter.ai/api/v1"
    assert (config.api.temperature, config.api.max_tokens, config.api.timeout_s) == (0.7, 8192, 600)
    assert config.prompts.system_message.startswith("You are an expert mathematician")
    assert (config.evaluation.timeout_s, config.evaluation.cascade, config.evaluation.cascade_thresholds) == (
        60, True, [0.5, 0.75])
    assert config.pipeline.parallel.num_workers == 4
    assert config.database.sampling.algorithm == "island"
    assert config.database.sampling.island.num_islands == 4
    text = notice(foreign.translation, "config_phase_1.yaml")
    assert "ignoring 16 keys (not an error): max_iterations, checkpoint_interval, log_level, " in text
    assert "llm.secondary_model" in text and "evolveflow uses the first" in text


def test_openevolve_model_list_form_and_template_named_system_message():
    translation = translate(yaml.safe_load("""
        llm:
          models:
            - {name: "gpt-4o-mini", weight: 1.0, api_key: "${OPENAI_API_KEY}"}
          api_base: "https://api.openai.com/v1"
          retries: 5
        prompt:
          system_message: system_message
        random_seed: 7
        evaluator: {timeout: 90, cascade_thresholds: [0.5, 0.7], parallel_evaluations: 1}
    """))
    assert translation.config["api"] == {"model": "openai/gpt-4o-mini", "api_base": "https://api.openai.com/v1",
                                         "api_key_env": "OPENAI_API_KEY", "num_retries": 5}
    assert translation.config["pipeline"] == {"seed": 7, "parallel": {"num_workers": 1}}
    assert "prompts" not in translation.config
    assert "names an OpenEvolve template ('system_message')" in notice(translation, "c.yaml")
    assert "llm.models" not in translation.ignored  # used (its first model)


def test_shinka_config_is_translated(tmp_path):
    translation = translate(yaml.safe_load(SHINKA_CONFIG + 'job_config:\n  time: "00:05:00"\n'
                                           + '  eval_program_path: "evaluate.py"\n'))
    assert translation.format == "ShinkaEvolve" and translation.contract == "shinka"
    assert translation.config == {
        "pipeline": {"parallel": {"num_workers": 2}},
        "database": {"sampling": {"algorithm": "island", "island": {"num_islands": 2, "migration_interval": 10}}},
        "evaluation": {"timeout_s": 300.0},
        "initial_program": "initial.py",
    }
    with_message = translate({"evo_config": {"task_sys_msg": "Pack circles.", "num_generations": 5}})
    assert with_message.config == {"prompts": {"system_message": "Pack circles."}}


def test_untranslatable_foreign_values_name_the_file_and_their_key(tmp_path):
    bad_time = write(tmp_path / "shinka.yaml", "evo_config: {}\njob_config:\n  time: 5 minutes\n")
    with pytest.raises(ConfigError, match=r"shinka.yaml: job_config.time is '5 minutes', not a time of the form hh:mm:ss"):
        load_config([bad_time])
    bad_workers = write(tmp_path / "config.yaml", "llm: {}\nevaluator:\n  parallel_evaluations: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config([bad_workers])
    message = str(err.value)
    assert message.startswith(f"{bad_workers} (translated from OpenEvolve): 'pipeline.parallel.num_workers' "
                              "(from its key evaluator.parallel_evaluations)")


def test_layers_merge_after_translation_and_flags_win(tmp_path):
    root = write(tmp_path / "root.yaml", ASI_ROOT_CONFIG)
    exp = write(tmp_path / "exp.yaml", ASI_DEMO_CONFIG)
    ours = write(tmp_path / "ours.yaml", "cognition:\n  embeddings: false\n")
    config, foreign = load_config_layers([root, exp, ours], {"pipeline.sample_n": 2})
    assert [f.path for f in foreign] == [root, exp]
    assert config.evaluation.timeout_s == 300 and config.database.sampling.ucb_c == 1.414
    assert config.cognition.embeddings is False and config.pipeline.sample_n == 2


def test_openevolve_feature_dimensions_are_left_out_of_the_mean_score():
    translation = translate({"max_iterations": 10, "database": {"feature_dimensions": ["slope_changes", "noise"]}})
    assert translation.config["evaluation"]["mean_excludes"] == ["slope_changes", "noise"]
    assert "database.feature_dimensions" in notice(translation, "config.yaml").split("ignoring")[0]
