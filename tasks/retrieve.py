"""retrieve: find knowledge and past lessons relevant to the sampled parent."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from evolveflow.records import Retrieved, Sampled
from evolveflow.runtime import Runtime, get_runtime


def query_for(sampled: Sampled, problem: str) -> str:
    """Returns the search text: the parent's idea and analysis, else the problem's opening."""
    parent = sampled.parent
    parts = [parent.motivation, parent.analysis or ""]
    parts += [f.error or "" for f in sampled.failures[:1]]
    text = " ".join(p.strip() for p in parts if p and p.strip())
    return text or problem.strip()[:500]


def find_relevant(rt: Runtime, sampled: Sampled) -> list[Retrieved]:
    """Returns the top-k knowledge items and lessons for this round."""
    top_k = rt.config.cognition.retrieval.top_k
    if top_k == 0:
        return []
    with rt.memory_lock:
        return rt.memory.search(query_for(sampled, rt.experiment.problem), top_k)


@task(name="retrieve", cache_policy=NO_CACHE)
def retrieve(search_id: str, sampled: Sampled) -> list[Retrieved]:
    """Finds knowledge and lessons relevant to the parent."""
    return find_relevant(get_runtime(search_id), sampled)
