"""Read the knowledge items of an ASI-Evolve `init_cognition.py` without running it.

The script is parsed with `ast`; what it would add is recovered from literals:
``CognitionItem(content=..., source=..., metadata=...)`` calls (keyword or positional
arguments) and dict literals with a "content" key (``store.add([{"title": ..., "content": ...}])``).
An item whose content is computed (an f-string, a variable, a loop) cannot be known without
executing the script, which evolveflow never does: it is counted as skipped.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

INIT_COGNITION = "init_cognition.py"
COGNITION_STORE = "cognition_data/cognition.json"  # what running init_cognition.py left, if it was run
_ITEM_CLASS = "CognitionItem"
_POSITIONAL = ("content", "source", "metadata")
_TITLE_WORDS = 8


@dataclass(frozen=True)
class CognitionScript:
    """What could be read from an init_cognition.py."""

    items: tuple[dict, ...]  # {title, content, source}
    skipped: int  # items built by code, not literals
    problem: str | None = None  # why nothing could be read (a syntax error), else None


def _literal(node: ast.AST | None) -> object:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


_NOT_LITERAL = object()


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _item(content: object, title: object, source: object, file_name: str) -> dict | None:
    """Returns the item, {} for a literal without content, None when the content is built by code."""
    if not isinstance(content, str):
        return {} if content is None else None
    content = content.strip()
    if not content:
        return {}
    for candidate in (title, source):
        if isinstance(candidate, str) and candidate.strip():
            title = candidate.strip()
            break
    else:
        words = content.split()
        title = " ".join(words[:_TITLE_WORDS]) + (" ..." if len(words) > _TITLE_WORDS else "")
    return {"title": title, "content": content, "source": file_name}


def _from_call(call: ast.Call, file_name: str) -> dict | None:
    args: dict[str, ast.AST] = dict(zip(_POSITIONAL, call.args))
    for keyword in call.keywords:
        if keyword.arg is None:  # CognitionItem(**values): built by code
            return None
        args[keyword.arg] = keyword.value
    return _item(_literal(args.get("content")), _literal(args.get("title")), _literal(args.get("source")),
                 file_name)


def _from_dict(node: ast.Dict, file_name: str) -> dict | None:
    values = {key.value: value for key, value in zip(node.keys, node.values)
              if isinstance(key, ast.Constant) and isinstance(key.value, str)}
    return _item(_literal(values.get("content")), _literal(values.get("title")), _literal(values.get("source")),
                 file_name)


def _is_knowledge_dict(node: ast.AST) -> bool:
    if not isinstance(node, ast.Dict):
        return False
    keys = {key.value for key in node.keys if isinstance(key, ast.Constant)}
    return "content" in keys and "role" not in keys  # {"role", "content"} is a chat message, not knowledge


def read_cognition_script(path: Path) -> CognitionScript:
    """Returns the literal knowledge items of an init_cognition.py, and how many were built by code."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        return CognitionScript((), 0, f"{Path(path).name} could not be parsed ({exc}): its knowledge is not loaded")
    items: list[dict] = []
    skipped = 0
    inside_items: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == _ITEM_CLASS:
            inside_items |= {id(inner) for inner in ast.walk(node) if inner is not node}
    for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
        if id(node) in inside_items:
            continue
        if isinstance(node, ast.Call) and _call_name(node) == _ITEM_CLASS:
            item = _from_call(node, Path(path).name)
        elif _is_knowledge_dict(node):
            item = _from_dict(node, Path(path).name)
        else:
            continue
        if item is None:
            skipped += 1
        elif item:
            items.append(item)
    return CognitionScript(tuple(items), skipped)


def read_cognition_store(path: Path) -> tuple[dict, ...]:
    """Returns the items of an ASI-Evolve cognition.json ({"items": {id: {content, source}}}); () if unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    stored = data.get("items") if isinstance(data, dict) else None
    if not isinstance(stored, dict):
        return ()
    items = (_item(entry.get("content"), entry.get("title"), entry.get("source"), COGNITION_STORE)
             for entry in stored.values() if isinstance(entry, dict))
    return tuple(item for item in items if item)
