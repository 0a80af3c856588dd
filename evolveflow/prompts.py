"""Build the proposal and analysis prompts from template files an experiment may override."""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

from evolveflow.caps import cap_feedback, cut_text, metrics_text
from evolveflow.records import Node, Retrieved

PARENT_HEADING = "# Current program"
INSPIRATIONS_HEADING = "# Other programs, for inspiration"
FACTS_HEADING = "## Facts"
_FENCE = re.compile(r"```python\n(.*?)\n```", re.DOTALL)


class PromptTemplateError(Exception):
    """A prompt template uses a placeholder we do not provide."""


@dataclass(frozen=True)
class Templates:
    """The three prompt templates of a search."""

    system: str
    propose: str
    analyze: str


def load_templates(override_dir: Path | None = None, system_message: str | None = None) -> Templates:
    """Returns the templates, taking each from override_dir when it has the file.

    A system_message (config prompts.system_message, OpenEvolve's prompt.system_message) replaces
    the system template. Other files in override_dir (e.g. ASI-Evolve's *.jinja2) are not read.
    """
    builtin = resources.files("evolveflow") / "prompts"

    def read(name: str) -> str:
        if override_dir is not None and (override_dir / name).is_file():
            return (override_dir / name).read_text()
        return (builtin / name).read_text()

    system = system_message if system_message and system_message.strip() else read("system.md")
    return Templates(system, read("propose.md"), read("analyze.md"))


def _fill(template: str, values: Mapping[str, str], name: str) -> str:
    try:
        return string.Template(template).substitute(values)
    except KeyError as exc:
        raise PromptTemplateError(
            f"prompt template {name} uses ${exc.args[0]}, which is not one of: "
            + ", ".join(f"${k}" for k in sorted(values))
        ) from None
    except ValueError as exc:
        raise PromptTemplateError(f"prompt template {name}: {exc} (write $$ for a literal $)") from None


def _cut(code: str, limit: int) -> str:
    if len(code) <= limit:
        return code
    return code[:limit] + f"\n# ... [{len(code) - limit} more characters not shown]"


def _score(node: Node) -> str:
    return "none" if node.score is None else f"{node.score:.6g}"


def render_node(node: Node, heading: str, max_code_chars: int, with_feedback: bool = False,
                max_metrics_chars: int = 2_000, max_feedback_chars: int = 4_000) -> str:
    """Returns a node as a prompt section: score, metrics, motivation, analysis, feedback and code.

    Private metrics are never shown; the evaluator's feedback only for the parent (with_feedback).
    Metrics and feedback are cut to their caps (prompts.max_metrics_chars / max_feedback_chars).
    """
    lines = [f"{heading} (node {node.id}, score {_score(node)})", ""]
    lines.append(f"Metrics: {metrics_text(node.metrics, max_metrics_chars)}")
    if node.motivation:
        lines.append(f"Motivation: {node.motivation.strip()}")
    if node.analysis:
        lines.append(f"Analysis: {node.analysis.strip()}")
    lines += ["", "```python", _cut(node.code, max_code_chars).rstrip("\n"), "```"]
    if with_feedback and node.feedback:  # after the code, so it can never be mistaken for it
        lines += ["", render_feedback(node.feedback, max_feedback_chars)]
    return "\n".join(lines)


def render_feedback(feedback: Mapping[str, str], max_chars: int = 4_000) -> str:
    """Returns what the evaluator said about a program (artifacts, text feedback, errors, stderr), in max_chars."""
    title = "Evaluator feedback on this program:"
    keys = sorted(feedback, key=lambda k: (k == "stderr", k))
    headings = len(title) + sum(len(f"\n--- {key} ---\n") for key in keys)
    items = cap_feedback({key: feedback[key].rstrip() for key in keys}, max(0, max_chars - headings))
    lines = [title]
    for key in keys:
        lines += [f"--- {key} ---", items[key]]
    return cut_text("\n".join(lines), max_chars)


def render_failures(failures: Sequence[Node]) -> str:
    """Returns the parent's recent failed children, so the model can avoid or fix them."""
    if not failures:
        return ""
    lines = ["# Recent attempts from this program that failed (fix or avoid these)", ""]
    for node in failures:
        reason = (node.error or "unknown error").strip().splitlines()
        lines.append(f"- node {node.id} ({node.status.value}): {' '.join(reason[-3:])[:400]}")
        if node.motivation:
            lines.append(f"  its idea: {node.motivation.strip()[:200]}")
    return "\n".join(lines)


def render_retrieved(items: Sequence[Retrieved]) -> str:
    """Returns knowledge items and past lessons as a bulleted section."""
    if not items:
        return ""
    lines = ["# Relevant knowledge and lessons from earlier rounds", ""]
    for item in items:
        origin = f"lesson from node {item.node_id}" if item.kind == "lesson" else "knowledge"
        lines.append(f"- [{origin}] {item.title}: {item.content.strip()}")
    return "\n".join(lines)


def build_proposal_messages(
    templates: Templates,
    problem: str,
    parent: Node,
    inspirations: Sequence[Node],
    failures: Sequence[Node],
    retrieved: Sequence[Retrieved],
    reply_format: str,
    max_code_chars: int = 12_000,
    max_metrics_chars: int = 2_000,
    max_feedback_chars: int = 4_000,
) -> list[dict[str, str]]:
    """Returns the chat messages asking for an improved version of the parent."""
    inspiration_text = ""
    if inspirations:
        inspiration_text = "\n\n".join(
            render_node(n, "## Program", max_code_chars, max_metrics_chars=max_metrics_chars) for n in inspirations
        )
        inspiration_text = f"{INSPIRATIONS_HEADING}\n\n{inspiration_text}"
    values = {
        "problem": problem.strip(),
        "parent": render_node(parent, PARENT_HEADING, max_code_chars, with_feedback=True,
                              max_metrics_chars=max_metrics_chars, max_feedback_chars=max_feedback_chars),
        "failures": render_failures(failures),
        "inspirations": inspiration_text,
        "retrieved": render_retrieved(retrieved),
        "reply_format": reply_format.strip(),
    }
    user = _fill(templates.propose, values, "propose.md")
    user = re.sub(r"\n{3,}", "\n\n", user).strip() + "\n"
    return [
        {"role": "system", "content": templates.system.strip()},
        {"role": "user", "content": user},
    ]


def build_analysis_messages(
    templates: Templates, facts: Mapping[str, object], motivation: str, edit: str
) -> list[dict[str, str]]:
    """Returns the chat messages asking for a lesson about one finished experiment."""
    fact_lines = "\n".join(f"{key}: {value}" for key, value in facts.items())
    values = {"facts": fact_lines, "motivation": motivation.strip() or "(none given)", "edit": edit.strip()}
    return [{"role": "user", "content": _fill(templates.analyze, values, "analyze.md")}]


def programs_in_prompt(prompt: str) -> tuple[str | None, list[str]]:
    """Returns the current program and the inspiration programs shown in a proposal prompt."""
    parent = None
    _, _, rest = prompt.partition(PARENT_HEADING)
    if rest:
        found = _FENCE.search(rest)
        parent = found.group(1) + "\n" if found else None
    _, _, tail = prompt.partition(INSPIRATIONS_HEADING)
    inspirations, position = [], 0
    for match in _FENCE.finditer(tail):
        # A top-level heading between two fences (outside any code) ends the section.
        if re.search(r"(^|\n)# ", tail[position:match.start()]):
            break
        inspirations.append(match.group(1) + "\n")
        position = match.end()
    return parent, inspirations


def facts_in_prompt(prompt: str) -> dict[str, str]:
    """Returns the key: value facts of an analysis prompt."""
    _, _, rest = prompt.partition(FACTS_HEADING)
    section = re.split(r"\n## ", rest, maxsplit=1)[0]
    facts = {}
    for line in section.strip().splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            facts[key.strip()] = value.strip()
    return facts
