"""A hosted model named by a peer's config runs offline, with one notice, when its key is not set."""
from evolveflow.experiment import load_experiment
from tests.support.peer_folders import openevolve_folder, write


def test_a_foreign_model_without_its_key_falls_back_to_the_offline_model(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    folder = openevolve_folder(tmp_path)
    exp = load_experiment(folder.name, tmp_path)
    assert exp.config.api.model == "offline/mutator"
    (line,) = [n for n in exp.notices if "needs OPENAI_API_KEY" in n]
    assert line.startswith("api.model openai/google/gemini-2.0-flash-001 (from ")
    assert line.endswith("running with the offline model instead (export OPENAI_API_KEY, or pass --model, "
                         "to use openai/google/gemini-2.0-flash-001)")


def test_the_foreign_model_is_kept_with_its_key_a_local_server_or_an_explicit_model(tmp_path, monkeypatch):
    folder = openevolve_folder(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert load_experiment(folder.name, tmp_path).config.api.model == "openai/google/gemini-2.0-flash-001"
    monkeypatch.delenv("OPENAI_API_KEY")
    explicit = load_experiment(folder.name, tmp_path, overrides={"api.model": "openai/gpt-4o-mini"})
    assert explicit.config.api.model == "openai/gpt-4o-mini"  # the user asked: checked strictly at start
    config = folder / "config_phase_1.yaml"
    write(config, config.read_text().replace("https://openrouter.ai/api/v1", "http://127.0.0.1:8000/v1"))
    assert load_experiment(folder.name, tmp_path).config.api.model == "openai/google/gemini-2.0-flash-001"
