"""A griffe extension for the API reference: the docstrings' reStructuredText bits as Markdown.

The package's docstrings are written for Sphinx: cross-references are roles
(:class:`~billing.Money`, :meth:`subscribe`...) and a paragraph ending in ``::`` introduces an
indented literal block. mkdocstrings renders Markdown, where a role would show as raw text, so
before any docstring is parsed this extension rewrites, in every docstring of the package:

* each role into an *optional* mkdocs-autorefs cross-reference (``<autoref ... optional>``):
  a link when the target is rendered somewhere in the site, plain code otherwise (never a
  warning, so ``mkdocs build --strict`` stays green). Relative targets (``close``, ``Plan``) are
  resolved in the docstring's own scope, and aliases (``billing.Money``) to the object's
  canonical path, which is where mkdocstrings renders it;
* ``text::`` into ``text:`` and a lone ``::`` line into nothing (the indented block after it is
  already a Markdown code block).

mkdocs.yml loads it with the python handler's ``extensions`` option; it is not a page
(``exclude_docs``).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|attr|data|const|mod|exc|obj):`(?P<body>[^`]+)`"
)
_TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_CALLABLE_ROLES = frozenset({"meth", "func"})


def _lookup(obj: griffe.Object | griffe.Alias, path: str) -> str | None:
    """The canonical path of ``path`` among the loaded modules, or None when it is not there."""
    try:
        found = obj.modules_collection[path]
    except (KeyError, ValueError, griffe.GriffeError):
        return None
    try:
        return str(found.final_target.path if found.is_alias else found.path)
    except griffe.GriffeError:  # an alias to something not loaded, such as the standard library
        return path


def _resolve(obj: griffe.Object | griffe.Alias, target: str) -> str:
    """The identifier a reference to ``target`` written in ``obj``'s docstring points at."""
    found = _lookup(obj, target)
    if found is not None:
        return found
    head, _, rest = target.partition(".")
    try:
        scoped = obj.resolve(head)
    except griffe.GriffeError:
        return target
    full = f"{scoped}.{rest}" if rest else scoped
    return _lookup(obj, full) or full


def _role(obj: griffe.Object | griffe.Alias, match: re.Match[str]) -> str:
    body = re.sub(r"\s+", "", match["body"]) if "<" not in match["body"] else match["body"]
    titled = _TITLED.match(body)
    if titled:
        title, target = titled["title"], re.sub(r"\s+", "", titled["target"])
    else:
        target = body
        title = ""
    short = target.startswith("~")
    target = target.lstrip("~!.")
    if not title:
        title = target.rsplit(".", 1)[-1] if short else target
        if match["role"] in _CALLABLE_ROLES:
            title += "()"
    identifier = _resolve(obj, target)
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _literal_blocks(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if line.strip() == "::":
            lines.append("")
        elif line.endswith("::") and not line.startswith("    "):
            lines.append(line[:-1])
        else:
            lines.append(line)
    return "\n".join(lines)


def markdown(obj: griffe.Object | griffe.Alias, text: str) -> str:
    """``text``, a docstring of ``obj``, with its roles and literal-block markers as Markdown."""
    return _literal_blocks(_ROLE.sub(lambda match: _role(obj, match), text))


class RstRoles(griffe.Extension):
    """Rewrite every docstring of a loaded package (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._rewrite(pkg, set())

    def _rewrite(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj, obj.docstring.value)
            obj.docstring.__dict__.pop("parsed", None)
        for member in obj.members.values():
            if not member.is_alias and isinstance(member, griffe.Object):
                self._rewrite(member, seen)
