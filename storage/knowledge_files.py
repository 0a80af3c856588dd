"""Read a directory of Markdown, text and JSON files into knowledge items."""
from __future__ import annotations

import json
from pathlib import Path

TEXT_SUFFIXES = {".md", ".txt"}
JSON_SUFFIXES = {".json", ".jsonl"}


class KnowledgeFileError(Exception):
    """A knowledge file is malformed; the message names the file (and line where known)."""


def load_knowledge_dir(path: Path) -> list[dict]:
    """Read *.md/*.txt/*.json/*.jsonl files, sorted by name, into {title, content, source} items."""
    directory = Path(path)
    if not directory.is_dir():
        raise KnowledgeFileError(
            f"knowledge directory {directory} does not exist or is not a directory"
        )
    items: list[dict] = []
    wanted = TEXT_SUFFIXES | JSON_SUFFIXES
    files = sorted(
        (f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in wanted),
        key=lambda f: f.name,
    )
    for file in files:
        items.extend(load_knowledge_file(file))
    return items


def load_knowledge_file(path: Path) -> list[dict]:
    """Read one .md/.txt/.json/.jsonl file into {title, content, source} items."""
    file = Path(path)
    suffix = file.suffix.lower()
    if not file.is_file():
        raise KnowledgeFileError(f"knowledge file {file} does not exist")
    if suffix in TEXT_SUFFIXES:
        item = _text_item(file)
        return [item] if item is not None else []
    if suffix == ".json":
        return _json_items(file)
    if suffix == ".jsonl":
        return _jsonl_items(file)
    raise KnowledgeFileError(
        f"{file}: unsupported knowledge file type {suffix or '(none)'}; use .md, .txt, .json or .jsonl"
    )


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KnowledgeFileError(
            f"{file}: not valid UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc


def _text_item(file: Path) -> dict | None:
    """Title from the first '# ' heading (which is then dropped), else the file stem."""
    lines = _read(file).splitlines()
    title = file.stem
    for index, line in enumerate(lines):
        if line.startswith("# "):
            title = line[2:].strip() or file.stem
            del lines[index]
            break
    content = "\n".join(lines).strip()
    if not content:
        return None  # an empty note carries no knowledge; a heading alone neither
    return {"title": title, "content": content, "source": file.name}


def _json_items(file: Path) -> list[dict]:
    try:
        data = json.loads(_read(file))
    except json.JSONDecodeError as exc:
        raise KnowledgeFileError(f"{file}, line {exc.lineno}: invalid JSON: {exc.msg}") from exc
    if isinstance(data, dict):
        data = [data]  # a single object is a list of one, not an error
    if not isinstance(data, list):
        raise KnowledgeFileError(
            f"{file}: expected a list of {{\"title\", \"content\"}} objects, "
            f"got {type(data).__name__}"
        )
    return [_checked(obj, file, f"item {position}") for position, obj in enumerate(data)]


def _jsonl_items(file: Path) -> list[dict]:
    items = []
    for number, line in enumerate(_read(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KnowledgeFileError(f"{file}, line {number}: invalid JSON: {exc.msg}") from exc
        items.append(_checked(obj, file, f"line {number}"))
    return items


def _checked(obj: object, file: Path, where: str) -> dict:
    """Validate one JSON item and keep title, content and source."""
    if not isinstance(obj, dict):
        raise KnowledgeFileError(
            f"{file}, {where}: expected an object with 'title' and 'content', "
            f"got {type(obj).__name__}"
        )
    missing = [
        key for key in ("title", "content")
        if not isinstance(obj.get(key), str) or not obj[key].strip()
    ]
    if missing:
        raise KnowledgeFileError(
            f"{file}, {where}: missing or empty string field(s) {', '.join(missing)}"
        )
    source = obj.get("source")
    return {
        "title": obj["title"].strip(),
        "content": obj["content"].strip(),
        "source": source if isinstance(source, str) else file.name,
    }
