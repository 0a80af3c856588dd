"""Tests of reading a knowledge directory of Markdown, text and JSON files."""
import json

import pytest

from storage.knowledge_files import KnowledgeFileError, load_knowledge_dir


def test_reads_every_kind_sorted_by_file_name(tmp_path):
    (tmp_path / "b_notes.md").write_text("Intro line.\n\n# Pivot choice\n\nUse median of three.\n")
    (tmp_path / "a_plain.txt").write_text("\n  Caching helps repeated calls.  \n")
    (tmp_path / "c_list.json").write_text(json.dumps([
        {"title": "Islands", "content": "Separate populations.", "source": "paper-12"},
        {"title": "Elitism", "content": "Keep the best."},
    ]))
    (tmp_path / "d_lines.jsonl").write_text(
        '{"title": "Mutation", "content": "Small edits."}\n\n'
        '{"title": "Crossover", "content": "Mix parents."}\n'
    )
    (tmp_path / "ignored.py").write_text("print('not knowledge')")

    items = load_knowledge_dir(tmp_path)

    assert [i["title"] for i in items] == [
        "a_plain", "Pivot choice", "Islands", "Elitism", "Mutation", "Crossover",
    ]
    assert items[0]["content"] == "Caching helps repeated calls."
    # The heading line is removed; the text around it is kept, stripped.
    assert items[1]["content"] == "Intro line.\n\n\nUse median of three."
    assert items[1]["source"] == "b_notes.md"
    assert items[2]["source"] == "paper-12" and items[3]["source"] == "c_list.json"


def test_only_level_one_heading_is_a_title_and_empty_files_are_skipped(tmp_path):
    (tmp_path / "deep.md").write_text("## Not a title\nBody.\n")
    (tmp_path / "empty.md").write_text("# Only a heading\n\n")
    (tmp_path / "blank.txt").write_text("")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert load_knowledge_dir(tmp_path) == [
        {"title": "deep", "content": "## Not a title\nBody.", "source": "deep.md"}
    ]


def test_single_json_object_is_accepted(tmp_path):
    (tmp_path / "one.json").write_text('{"title": "T", "content": "C"}')
    assert load_knowledge_dir(tmp_path) == [{"title": "T", "content": "C", "source": "one.json"}]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"title": "ok", "content": "fine"}\n{"title": "broken",\n')
    with pytest.raises(KnowledgeFileError, match=r"bad\.jsonl, line 2: invalid JSON"):
        load_knowledge_dir(tmp_path)


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "bad.json").write_text('[\n  {"title": "a", "content": "b"},\n  oops\n]')
    with pytest.raises(KnowledgeFileError, match=r"bad\.json, line 3: invalid JSON"):
        load_knowledge_dir(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.jsonl", '{"title": "no content"}\n', r"missing\.jsonl, line 1: .*content"),
        ("blank.jsonl", '{"title": " ", "content": "x"}\n', r"blank\.jsonl, line 1: .*title"),
        ("item.json", '[{"content": "no title"}]', r"item\.json, item 0: .*title"),
        ("number.json", "42", r"number\.json: expected a list"),
        ("strings.jsonl", '"just a string"\n', r"strings\.jsonl, line 1: expected an object"),
    ],
)
def test_items_without_title_or_content_are_rejected(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(KnowledgeFileError, match=message):
        load_knowledge_dir(tmp_path)


def test_missing_directory_and_non_utf8_file(tmp_path):
    with pytest.raises(KnowledgeFileError, match="does not exist"):
        load_knowledge_dir(tmp_path / "absent")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(KnowledgeFileError, match=r"latin1\.txt: not valid UTF-8"):
        load_knowledge_dir(tmp_path)
