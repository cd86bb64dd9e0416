"""Schema `tasks`: the todos a user keeps, by hand or through an agent.

`models` holds the row and input models, `queries` the SQL and the functions; everything is
importable from `app.tasks` directly. Every function takes the caller's connection and never
commits.
"""

from app.tasks.models import (
    TODO_STATUSES,
    UPDATABLE_FIELDS,
    Todo,
    TodoCreate,
    TodoStatus,
    TodoUpdate,
)
from app.tasks.queries import (
    UPDATE_TODO,
    complete_todo,
    count_todos_by_status,
    create_todo,
    delete_todo,
    get_todo,
    get_todos_by_status,
    list_todos,
    update_todo,
)

__all__ = [
    "TODO_STATUSES",
    "UPDATABLE_FIELDS",
    "UPDATE_TODO",
    "Todo",
    "TodoCreate",
    "TodoStatus",
    "TodoUpdate",
    "complete_todo",
    "count_todos_by_status",
    "create_todo",
    "delete_todo",
    "get_todo",
    "get_todos_by_status",
    "list_todos",
    "update_todo",
]
