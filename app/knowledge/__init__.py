"""Schema `knowledge`: long-term memory of the assistant, and the user's documents.

`models` holds the row and input models, `memories` remember / recall and the rest of a
memory's life, `documents` documents, their chunks and search over them; `search` how every
one of those searches stays complete for an owner of any size. Everything is importable from
`app.knowledge` directly.
"""

from app.knowledge.documents import (
    DuplicateDocumentError,
    add_chunks,
    add_document,
    delete_document,
    get_document,
    hybrid_search_chunks,
    list_chunks,
    list_documents,
    search_chunks,
)
from app.knowledge.memories import (
    forget,
    get_memory,
    list_memories,
    purge_expired_memories,
    recall,
    remember,
    update_memory,
)
from app.knowledge.models import (
    MEMORY_KINDS,
    Chunk,
    ChunkCreate,
    ChunkCreateDict,
    ChunkHit,
    Document,
    Memory,
    MemoryHit,
    MemoryKind,
    RecallWeights,
)

__all__ = [
    "MEMORY_KINDS",
    "Chunk",
    "ChunkCreate",
    "ChunkCreateDict",
    "ChunkHit",
    "Document",
    "DuplicateDocumentError",
    "Memory",
    "MemoryHit",
    "MemoryKind",
    "RecallWeights",
    "add_chunks",
    "add_document",
    "delete_document",
    "forget",
    "get_document",
    "get_memory",
    "hybrid_search_chunks",
    "list_chunks",
    "list_documents",
    "list_memories",
    "purge_expired_memories",
    "recall",
    "remember",
    "search_chunks",
    "update_memory",
]
