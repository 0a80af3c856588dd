"""Config: defaults, merge order, dotted overrides, and errors that name the key and file."""
from pathlib import Path

import pytest

from evolveflow.config import Config, ConfigError, load_config
from evolveflow.experiment import ExperimentError, config_files, load_experiment


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_are_offline_ucb1():
    config = Config()
    assert config.api.model == "offline/mutator"
    assert config.api.analyst() == "offline/analyst"
    assert config.database.sampling.algorithm == "ucb1"
    assert config.pipeline.parallel.num_workers == 1


def test_analyst_follows_a_real_model():
    config = load_config([], {"api.model": "openai/gpt-4o"})
    assert config.api.analyst() == "openai/gpt-4o"


def test_later_files_override_earlier_ones_key_by_key(tmp_path):
    a = write(tmp_path / "a.yaml", "api:\n  model: openai/x\n  temperature: 0.1\npipeline:\n  sample_n: 5\n")
    b = write(tmp_path / "b.yaml", "api:\n  temperature: 0.9\n")
    config = load_config([a, b], {"pipeline.sample_n": 2})
    assert config.api.model == "openai/x"  # kept from a
    assert config.api.temperature == 0.9  # b wins
    assert config.pipeline.sample_n == 2  # flags win


def test_unknown_key_names_key_and_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "database:\n  sampling:\n    algoritm: ucb1\n")
    with pytest.raises(ConfigError) as err:
        load_config([bad])
    assert str(bad) in str(err.value)
    assert "unknown key 'database.sampling.algoritm'" in str(err.value)


def test_bad_value_names_key_file_and_value(tmp_path):
    good = write(tmp_path / "good.yaml", "pipeline:\n  sample_n: 3\n")
    bad = write(tmp_path / "bad.yaml", "database:\n  sampling:\n    algorithm: mcts\n")
    with pytest.raises(ConfigError) as err:
        load_config([good, bad])
    message = str(err.value)
    assert message.startswith(str(bad))
    assert "database.sampling.algorithm" in message and "'mcts'" in message


def test_bad_flag_is_blamed_on_the_command_line():
    with pytest.raises(ConfigError, match=r"command-line flags: 'pipeline.sample_n'"):
        load_config([], {"pipeline.sample_n": 0})


def test_malformed_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([write(tmp_path / "x.yaml", "api: [unclosed\n")])
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config([write(tmp_path / "y.yaml", "- a\n- b\n")])


def test_experiment_merge_order_root_then_experiment_then_config(tmp_path):
    exp = tmp_path / "experiments" / "demo"
    write(tmp_path / "config.yaml", "api:\n  temperature: 0.1\n  max_tokens: 100\n")
    write(exp / "config.yaml", "api:\n  temperature: 0.2\n")
    extra = write(tmp_path / "extra.yaml", "api:\n  max_tokens: 300\n")
    write(exp / "input.md", "problem")
    write(exp / "initial_program.py", "x = 1\n")
    write(exp / "evaluator.py", "def evaluate(p):\n    return {'score': 1}\n")
    assert config_files(exp, tmp_path, extra) == [tmp_path / "config.yaml", exp / "config.yaml", extra]
    loaded = load_experiment("demo", tmp_path, extra, {"pipeline.seed": 7})
    assert (loaded.config.api.temperature, loaded.config.api.max_tokens) == (0.2, 300)
    assert loaded.config.pipeline.seed == 7
    assert loaded.evaluator_path == (exp / "evaluator.py").resolve()
    assert loaded.storage_dir == (tmp_path / "runs" / "demo").resolve()


def test_missing_experiment_pieces_are_named(tmp_path):
    with pytest.raises(ExperimentError, match="evolveflow init nope"):
        load_experiment("nope", tmp_path)
    exp = tmp_path / "experiments" / "demo"
    write(exp / "input.md", "problem")
    with pytest.raises(ExperimentError, match="initial program initial_program.py not found"):
        load_experiment("demo", tmp_path)
    write(exp / "initial_program.py", "x = 1\n")
    with pytest.raises(ExperimentError, match="has no evaluator"):
        load_experiment("demo", tmp_path)
    write(exp / "config.yaml", "evaluation:\n  script: missing.sh\n")
    with pytest.raises(ExperimentError, match="evaluation.script = missing.sh: no such file"):
        load_experiment("demo", tmp_path)


def test_a_missing_experiment_names_each_place_looked_once(tmp_path):
    import pytest as _pytest

    from evolveflow.experiment import ExperimentError, find_experiment_dir

    missing = tmp_path / "nowhere"
    with _pytest.raises(ExperimentError, match=rf"looked for {missing}\. Create one"):
        find_experiment_dir(str(missing), tmp_path)
    with _pytest.raises(ExperimentError, match=rf"looked for {tmp_path}/experiments/demo and .*/demo\. Create"):
        find_experiment_dir("demo", tmp_path)
