"""README's "API reference" is the public API as it is: one line for every name in the `__all__`
of every public module, with the signature the code has and its docstring's first sentence.

The expected section is rendered here from the modules themselves, so a failure shows the lines
to paste; `.venv/bin/python tests/test_api_reference.py` prints the whole section. The
rendering rules are the ones README states at the top of the section.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import app
from app.messaging import Chat

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## API reference"
WIDTH = 100  # README's line length; an item wraps, its continuation lines indented by two
MAX_SUMMARY = 120  # a docstring's first sentence longer than this is not one line
SKIPPED_PACKAGES = ("app.bench",)  # run from a checkout, not part of the installed package


class Item(NamedTuple):
    """One README line: the code span, and the text after it (None: the author's own words)."""

    name: str
    code: str
    text: str | None
    problem: str | None = None  # why the docstring cannot give the text


# Modules ---------------------------------------------------------------------------------------


def public_modules() -> list[ModuleType]:
    """Every module of the package that defines `__all__`: app.database first, then by name."""
    found = []
    for info in pkgutil.walk_packages(app.__path__, prefix="app."):
        if info.name.startswith(SKIPPED_PACKAGES):
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            found.append(module)
    return sorted(found, key=lambda module: (module.__name__ != "app.database", module.__name__))


def home_modules(modules: list[ModuleType]) -> dict[int, str]:
    """For each function or class exported more than once, the module it is listed under: of
    the exporters whose name begins the object's `__module__`, the shortest (a package root
    before its submodule); else the first exporter."""
    exporters: dict[int, list[str]] = {}
    objects: dict[int, Any] = {}
    for module in modules:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value) or inspect.isclass(value):
                exporters.setdefault(id(value), []).append(module.__name__)
                objects[id(value)] = value
    homes = {}
    for key, names in exporters.items():
        defined_in = objects[key].__module__
        parents = [name for name in names if (defined_in + ".").startswith(name + ".")]
        homes[key] = min(parents, key=len) if parents else names[0]
    return homes


# Rendering -------------------------------------------------------------------------------------


def strip_modules(text: str) -> str:
    """`typing.Literal['a']` -> `Literal['a']`, `app.agents.models.Execution` -> `Execution`."""
    return re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])", "", text)


def summary(obj: Any) -> str:
    """The first sentence of the docstring's first paragraph, on one line ("" without one)."""
    paragraph = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].split())
    end = re.search(r"(?<!e\.g)(?<!i\.e)[.!?](?=\s|$)", paragraph)  # not at "e.g." or "i.e."
    return paragraph[: end.end()] if end else paragraph


def docstring_problem(obj: Any, what: str, *, own: bool = True) -> str | None:
    """Why `obj`'s docstring cannot give its README line, or None."""
    sentence = summary(obj)
    if not sentence or not own:
        return f"{what} has no docstring of its own: its first sentence is its README line"
    if len(sentence) > MAX_SUMMARY:
        return (
            f"{what}: the docstring's first sentence is {len(sentence)} characters (at most "
            f"{MAX_SUMMARY}): start it with a shorter one\n  {sentence}"
        )
    return None


def default(value: Any) -> str:
    """A default as README shows it: a plain literal as written, anything else as `…`."""
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    return "…"


def parameters(signature: inspect.Signature, *, bound: bool) -> str:
    """The parameters by name and default, without their types; `self`/`cls` (when `bound`)
    and private (`_name`) parameters left out; `/` and `*` where Python puts them."""
    shown = []
    params = list(signature.parameters.values())
    if bound:
        params = params[1:]
    star = False
    for index, param in enumerate(params):
        if param.name.startswith("_"):
            continue
        if param.kind is param.VAR_POSITIONAL:
            shown.append(f"*{param.name}")
            star = True
        elif param.kind is param.VAR_KEYWORD:
            shown.append(f"**{param.name}")
        else:
            if param.kind is param.KEYWORD_ONLY and not star:
                shown.append("*")
                star = True
            text = param.name
            if param.default is not param.empty:
                text += f"={default(param.default)}"
            shown.append(text)
            following = params[index + 1] if index + 1 < len(params) else None
            if param.kind is param.POSITIONAL_ONLY and (
                following is None or following.kind is not param.POSITIONAL_ONLY
            ):
                shown.append("/")
    return ", ".join(shown)


def annotation(value: Any) -> str:
    """A return annotation as the source writes it (the modules postpone annotations)."""
    return value if isinstance(value, str) else strip_modules(inspect.formatannotation(value))


def function_code(name: str, function: Any, *, bound: bool = False) -> str:
    """`[async ]name(parameters)[ -> return]`; a context-manager function shows the manager."""
    signature = inspect.signature(function)
    returns = signature.return_annotation
    wrapped = getattr(function, "__wrapped__", None)
    prefix = "async " if inspect.iscoroutinefunction(function) else ""
    if wrapped is not None and inspect.isasyncgenfunction(wrapped):  # @asynccontextmanager
        returns = re.sub(r"^AsyncIterator\[", "AbstractAsyncContextManager[", annotation(returns))
    code = f"{prefix}{name}({parameters(signature, bound=bound)})"
    if returns is not signature.empty:
        code += f" -> {annotation(returns)}"
    return code


def typed_dict_code(name: str, cls: Any) -> str:
    """`Name{key, key?}`: its keys in order, `?` on one that may be left out."""
    keys = []
    for key, value in cls.__annotations__.items():
        written = getattr(value, "__forward_arg__", value)  # postponed: the source's text
        optional = key in cls.__optional_keys__ or str(written).startswith(
            ("NotRequired[", "typing.NotRequired[")
        )
        keys.append(key + ("?" if optional else ""))
    return f"{name}{{{', '.join(keys)}}}"


def data_code(name: str, value: Any) -> str:
    """`NAME = value` when the value is short and plain, else `NAME: type`; an alias as
    `Name = Literal[…]`; a sentinel (its repr is its name) by its name alone."""
    if typing.get_origin(value) is not None:
        return f"{name} = {strip_modules(repr(value))}"
    text = repr(value)
    if text == name:  # a sentinel
        return name
    if "\n" in text or len(text) > 60 or " at 0x" in text:
        return f"{name}: {type(value).__name__}"
    return f"{name} = {text}"


def members(cls: type) -> Iterator[Item]:
    """A class's own public methods and properties (not those it inherits)."""
    for attribute, value in vars(cls).items():
        if attribute.startswith("_"):
            continue
        qualified = f"{cls.__name__}.{attribute}"
        if isinstance(value, property):
            returns = inspect.signature(value.fget).return_annotation
            code = f"{qualified}: {annotation(returns)}"
            yield Item(qualified, code, summary(value), docstring_problem(value, qualified))
        elif isinstance(value, classmethod | staticmethod):
            function = value.__func__
            bound = isinstance(value, classmethod)
            code = function_code(qualified, function, bound=bound)
            yield Item(qualified, code, summary(function), docstring_problem(function, qualified))
        elif inspect.isfunction(value):
            code = function_code(qualified, value, bound=True)
            yield Item(qualified, code, summary(value), docstring_problem(value, qualified))


def module_items(module: ModuleType, homes: dict[int, str]) -> Iterator[Item]:
    """The README lines of one module, in the order of its `__all__`."""
    for name in module.__all__:
        value = getattr(module, name)
        what = f"{module.__name__}.{name}"
        home = homes.get(id(value), module.__name__)
        if home != module.__name__:
            yield Item(name, name, f"the same as `{home}.{name}`.")
        elif inspect.isclass(value) and hasattr(value, "__required_keys__"):  # a TypedDict
            code = typed_dict_code(name, value)
            yield Item(name, code, summary(value), docstring_problem(value, what))
        elif inspect.isclass(value):
            try:
                code = f"{name}({parameters(inspect.signature(value), bound=False)})"
            except ValueError:  # a builtin's constructor (an exception's), no signature
                code = f"{name}(*args)"
            own = bool(vars(value).get("__doc__"))  # not the base's, inherited
            yield Item(name, code, summary(value), docstring_problem(value, what, own=own))
            yield from members(value)
        elif inspect.isfunction(value):
            code = function_code(name, value)
            yield Item(name, code, summary(value), docstring_problem(value, what))
        else:
            yield Item(name, data_code(name, value), None)


def expected() -> dict[str, list[Item]]:
    """Module name -> the README lines it should have."""
    modules = public_modules()
    homes = home_modules(modules)
    return {module.__name__: list(module_items(module, homes)) for module in modules}


# README ----------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(text.split())


def readme_items() -> dict[str, dict[str, str]]:
    """Module name -> item name -> the item's whole text on one line, from README's section."""
    text = README.read_text()
    if SECTION + "\n" not in text:
        return {}
    section = text.split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, dict[str, str]] = {}
    items: dict[str, str] | None = None
    current: list[str] = []

    def close() -> None:
        if current and items is not None:
            line = one_line(" ".join(current))
            code = re.match(r"- `(?:async )?([\w.]+)", line)
            assert code, f"README {SECTION}: an item that does not start with `name`: {line}"
            assert code.group(1) not in items, f"README lists {code.group(1)} twice"
            items[code.group(1)] = line
        current.clear()

    for line in section.splitlines():
        heading = re.fullmatch(r"### `([\w.]+)`", line)
        if heading:
            close()
            items = found.setdefault(heading.group(1), {})
        elif line.startswith("- "):
            close()
            current.append(line)
        elif line.startswith("  ") and current:
            current.append(line)
        else:
            close()
    close()
    return found


def rendered(item: Item, written: str | None = None) -> str:
    """The item as README should have it (wrapped); the author's text kept for data items."""
    text = item.text
    if text is None:
        mine = written.split("`: ", 1)[1] if written and "`: " in written else ""
        text = mine if written and one_line(written).startswith(f"- `{item.code}`: ") else "…"
    return textwrap.fill(
        f"- `{item.code}`: {text}",
        width=WIDTH,
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def matches(item: Item, written: str) -> bool:
    if item.text is None:
        prefix = f"- `{item.code}`: "
        return written.startswith(prefix) and len(written) > len(prefix)
    return written == one_line(rendered(item))


def whole_section() -> str:
    """The section README should have, for pasting."""
    written = readme_items()
    parts = []
    for module, items in expected().items():
        mine = written.get(module, {})
        lines = "\n".join(rendered(item, mine.get(item.name)) for item in items)
        parts.append(f"### `{module}`\n\n{lines}\n")
    return "\n".join(parts)


# Tests -----------------------------------------------------------------------------------------


def test_every_public_name_has_a_docstring_whose_first_sentence_is_one_line() -> None:
    problems = [item.problem for items in expected().values() for item in items if item.problem]
    assert not problems, "\n".join(problems)


def test_the_reference_covers_exactly_the_modules_that_define_all() -> None:
    assert SECTION + "\n" in README.read_text(), f"README has no {SECTION!r} section"
    modules = set(expected())
    written = set(readme_items())
    assert {"app.database", "app.messaging", "app.worker", "app.integrations.aiogram"} <= modules
    assert not modules - written, f"README {SECTION} has no section for {sorted(modules - written)}"
    assert not written - modules, (
        f"README {SECTION} has sections for modules with no __all__: {sorted(written - modules)}"
    )


def differences(wanted: dict[str, list[Item]], written: dict[str, dict[str, str]]) -> list[str]:
    """What README lacks, has in excess, or has out of date, with the lines it should have."""
    problems = []
    for module, items in wanted.items():
        mine = written.get(module, {})
        for item in items:
            line = mine.get(item.name)
            if line is None:
                problems.append(f"missing in {module}:\n{rendered(item)}")
            elif not matches(item, line):
                problems.append(
                    f"out of date in {module}:\n  README: {line}\n{rendered(item, line)}"
                )
        for name in sorted(set(mine) - {item.name for item in items}):
            problems.append(f"extra in {module} (not in its __all__): {mine[name]}")
    return problems


def test_every_public_name_has_its_line_with_its_current_signature() -> None:
    problems = differences(expected(), readme_items())
    hint = "(`.venv/bin/python tests/test_api_reference.py` prints the whole section)"
    assert not problems, f"README {SECTION} {hint}:\n" + "\n".join(problems)


def example_module(*functions: Any) -> ModuleType:
    """A stand-in for app.messaging whose `__all__` is `functions`."""
    module = ModuleType("app.messaging")
    for function in functions:
        setattr(module, function.__name__, function)
    module.__all__ = [function.__name__ for function in functions]  # type: ignore[attr-defined]
    return module


def test_a_function_added_to_all_without_its_line_is_reported_missing() -> None:
    async def forget_chat(conn: object, chat_id: object, *, hard: bool = False) -> None:
        """Forget a chat."""

    wanted = expected()
    wanted["app.messaging"] += module_items(example_module(forget_chat), {})
    assert differences(wanted, readme_items()) == [
        "missing in app.messaging:\n"
        "- `async forget_chat(conn, chat_id, *, hard=False) -> None`: Forget a chat."
    ]


def test_a_changed_signature_is_reported_out_of_date() -> None:
    async def create_chat(
        conn: object, *, owner_id: object, title: str | None = None, color: str = "blue"
    ) -> Chat:
        """Create a chat for `owner_id`."""
        raise NotImplementedError

    wanted = expected()
    (item,) = module_items(example_module(create_chat), {})
    wanted["app.messaging"] = [
        item if old.name == "create_chat" else old for old in wanted["app.messaging"]
    ]
    (problem,) = differences(wanted, readme_items())
    assert problem.startswith("out of date in app.messaging:\n  README: - `async create_chat(")
    assert problem.endswith("title=None, color='blue') -> Chat`: Create a chat for\n  `owner_id`.")


def test_a_line_for_a_name_no_longer_exported_is_reported_extra() -> None:
    wanted = expected()
    wanted["app.messaging"] = [i for i in wanted["app.messaging"] if i.name != "count_messages"]
    (problem,) = differences(wanted, readme_items())
    assert problem.startswith(
        "extra in app.messaging (not in its __all__): - `async count_messages("
    )


if __name__ == "__main__":
    sys.stdout.write(whole_section())
