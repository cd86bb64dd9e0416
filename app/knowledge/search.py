"""What the knowledge searches share: how many candidates they take, and their hit rows.

Every vector search here (recall, remember's search for the memory to reinforce,
search_chunks, hybrid_search_chunks) chooses its plan by the size of what it filters to, as
the message searches do (app.database.vectors, "plan choice"): when the owner's matching rows
are few, all of them are ranked exactly; otherwise the HNSW index is walked by an iterative
scan whose bound is raised, so an owner whose rows are a tiny share of the table still gets
`limit` rows. The statements follow that pattern; `run_vector_search` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import RowMaker

from app.database.rows import column_names, row_maker

MIN_CANDIDATES = 100
MAX_CANDIDATES = 1_000  # pgvector's upper bound for hnsw.ef_search
CANDIDATES_PER_RESULT = 10


def candidates_for(limit: int) -> int:
    """How many nearest rows a search takes from the HNSW index for `limit` results: ten per
    result, at least 100, at most 1,000. Recall and hybrid search rank the candidates again
    by another score, where a row a little further away may win; `./scripts/bench
    knowledge` measures recall@10 against an exact computation of that score."""
    return min(max(CANDIDATES_PER_RESULT * limit, MIN_CANDIDATES), MAX_CANDIDATES)


def hit_rows(row_model: type[Any], hit_model: type[Any], name: str) -> Any:
    """A psycopg row factory for search statements whose columns are `row_model`'s fields
    followed by a few of `hit_model`'s (similarity, score): each row becomes a `hit_model`
    holding the row model as `name`."""
    fields = len(row_model.model_fields)
    construct = hit_model.model_construct

    def factory(cursor: Any) -> RowMaker[Any]:
        names = column_names(cursor)
        make_row_model = row_maker(row_model, names[:fields])
        extra = names[fields:]

        def make_hit(values: Sequence[Any]) -> Any:
            extras = dict(zip(extra, values[fields:], strict=True))
            return construct(**{name: make_row_model(values[:fields])}, **extras)

        return make_hit

    return factory
