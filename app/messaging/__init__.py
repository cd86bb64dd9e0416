"""Schema `messaging`: chats, their messages, and search over them.

`models` holds the row and input models, `queries` the chat and message functions, `search`
semantic and hybrid search; everything is importable from `app.messaging` directly.
"""

from app.database.vectors import EMBEDDING_DIMENSIONS
from app.messaging.models import (
    UNSET,
    Chat,
    ChatCreate,
    ChatUpdate,
    Message,
    MessageCreate,
    MessageCreateDict,
    MessageHit,
    Role,
)
from app.messaging.queries import (
    add_message,
    add_messages,
    count_messages,
    create_chat,
    delete_chat,
    delete_message,
    get_chat,
    get_message,
    list_chats,
    list_messages,
    set_message_embedding,
    set_message_embeddings,
    update_chat,
)
from app.messaging.search import (
    DEFAULT_EF_SEARCH,
    HYBRID_SEARCH_MESSAGES,
    SEARCH_MESSAGES,
    SET_SEARCH_SETTINGS,
    hybrid_search_messages,
    search_messages,
)

__all__ = [
    "DEFAULT_EF_SEARCH",
    "EMBEDDING_DIMENSIONS",
    "HYBRID_SEARCH_MESSAGES",
    "SEARCH_MESSAGES",
    "SET_SEARCH_SETTINGS",
    "UNSET",
    "Chat",
    "ChatCreate",
    "ChatUpdate",
    "Message",
    "MessageCreate",
    "MessageCreateDict",
    "MessageHit",
    "Role",
    "add_message",
    "add_messages",
    "count_messages",
    "create_chat",
    "delete_chat",
    "delete_message",
    "get_chat",
    "get_message",
    "hybrid_search_messages",
    "list_chats",
    "list_messages",
    "search_messages",
    "set_message_embedding",
    "set_message_embeddings",
    "update_chat",
]
