"""What an admin page shows the operator, read from its HTML: the headings, the rows of the
changelist or of an inline, and the value of every field of a change form. Tests compare
these to exact figures, so a page that renders but shows the wrong thing fails."""

from collections.abc import Iterator

from django.http import HttpResponse
from django.test.html import Element, parse_html


def _page(response: HttpResponse) -> Element:
    assert response.status_code == 200, f"status {response.status_code}"
    return parse_html(response.content.decode())


def _elements(element: Element) -> Iterator[Element]:
    for child in element.children:
        if isinstance(child, Element):
            yield child
            yield from _elements(child)


def _attribute(element: Element, name: str) -> str | None:
    return dict(element.attributes).get(name)


def _classes(element: Element) -> list[str]:
    return (_attribute(element, "class") or "").split()


def _field_names(element: Element) -> list[str]:
    """The model fields an admin cell or form row is for, from its ``field-<name>`` classes."""
    return [css[len("field-") :] for css in _classes(element) if css.startswith("field-")]


def text(element: Element | str) -> str:
    """The text of an element as displayed: tags dropped, whitespace collapsed, an image by its
    alternative text (the admin's yes/no icons read "True" or "False")."""
    if isinstance(element, str):
        return " ".join(element.split())
    if element.name == "img":
        return _attribute(element, "alt") or ""
    return " ".join(" ".join(text(child) for child in element.children).split())


def headings(response: HttpResponse) -> dict[str, str]:
    """The page's ``title``, ``h1`` (what the page is) and ``h2`` (which object, if any)."""
    found: dict[str, str] = {}
    for element in _elements(_page(response)):
        if element.name in ("title", "h1", "h2") and element.name not in found:
            found[element.name] = text(element)
    return found


def rows(response: HttpResponse, within: str = "result_list") -> list[dict[str, str]]:
    """Every row of the table inside the element with id ``within`` (the changelist by default,
    or an inline such as ``lines-group``), as {field name: text shown}."""
    containers = [e for e in _elements(_page(response)) if _attribute(e, "id") == within]
    assert containers, f"no element with id {within!r} on the page"
    found = []
    for row in _elements(containers[0]):
        if row.name != "tr" or "empty-form" in _classes(row):
            continue
        cells = {
            name: text(cell)
            for cell in row.children
            if isinstance(cell, Element) and cell.name in ("td", "th")
            for name in _field_names(cell)
        }
        if cells:
            found.append(cells)
    return found


def form_values(response: HttpResponse) -> dict[str, str]:
    """Every field of a change or add form with the value shown: an input's value, the text of
    a select's chosen option, a textarea's text, a read-only field's text. Inline fields are
    keyed by their prefixed names (``lines-0-amount``) where editable."""
    values: dict[str, str] = {}
    for element in _elements(_page(response)):
        name = _attribute(element, "name")
        kind = _attribute(element, "type")
        if element.name == "input" and name and kind not in ("hidden", "submit", "button"):
            if kind == "checkbox":
                values[name] = "on" if any(k == "checked" for k, _ in element.attributes) else ""
            else:
                values[name] = _attribute(element, "value") or ""
        elif element.name == "select" and name:
            chosen = [
                text(option)
                for option in _elements(element)
                if option.name == "option" and any(k == "selected" for k, _ in option.attributes)
            ]
            values[name] = ", ".join(chosen)
        elif element.name == "textarea" and name:
            values[name] = text(element)
        elif len(_field_names(element)) == 1:
            readonly = [e for e in _elements(element) if "readonly" in _classes(e)]
            if readonly:
                values[_field_names(element)[0]] = text(readonly[0])
    return values


def options(response: HttpResponse, name: str) -> list[str]:
    """The texts of the choices the select called ``name`` offers, in order."""
    selects = [
        e
        for e in _elements(_page(response))
        if e.name == "select" and _attribute(e, "name") == name
    ]
    assert selects, f"no select named {name!r} on the page"
    return [text(option) for option in _elements(selects[0]) if option.name == "option"]


def titled_tables(response: HttpResponse) -> dict[str, list[dict[str, str]]]:
    """The tables of a custom admin page, each in a ``module`` under its ``h2`` title: rows as
    {column heading: text shown}."""
    tables: dict[str, list[dict[str, str]]] = {}
    for module in _elements(_page(response)):
        if "module" not in _classes(module):
            continue
        inside = list(_elements(module))
        titles = [text(e) for e in inside if e.name == "h2"]
        table = next((e for e in inside if e.name == "table"), None)
        if not titles or table is None:
            continue
        columns = [text(e) for e in _elements(table) if e.name == "th"]
        body = [e for e in _elements(table) if e.name == "tbody"]
        tables[titles[0]] = []
        for row in _elements(body[0] if body else table):
            if row.name != "tr" or any(e.name == "th" for e in _elements(row)):
                continue
            cells = [text(cell) for cell in row.children if isinstance(cell, Element)]
            # A row spanning the table (such as "No data in these months.") is kept as {"": text}.
            shown = zip(columns, cells, strict=True) if len(cells) == len(columns) else []
            tables[titles[0]].append(dict(shown) or {"": " ".join(cells)})
    return tables
