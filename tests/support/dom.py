"""A tiny DOM for page tests over HTTP: elements by id, their attributes and text, each
form's inputs, table rows. Ids must be unique (a duplicate fails the parse)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Dom(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, dict[str, Any]] = {}
        self.elements: list[dict[str, Any]] = []
        self.texts: list[str] = []  # every text node, stripped
        self._open: list[dict[str, Any]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element: dict[str, Any] = {
            "tag": tag, "attrs": dict(attrs), "text": "", "inputs": [],
            "within": [str(e["attrs"]["id"]) for e in self._open if e["attrs"].get("id")]}
        self.elements.append(element)
        if "id" in element["attrs"]:
            assert element["attrs"]["id"] not in self.by_id, f"duplicate id {element['attrs']}"
            self.by_id[str(element["attrs"]["id"])] = element
        if tag in ("input", "button", "select", "textarea"):
            for parent in self._open:
                if parent["tag"] == "form":
                    parent["inputs"].append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append(" ".join(data.split()))
        for element in self._open:
            element["text"] += data

    def __contains__(self, element_id: str) -> bool:
        return element_id in self.by_id

    def attr(self, element_id: str, name: str) -> str | None:
        value = self.by_id[element_id]["attrs"].get(name)
        return None if value is None else str(value)

    def text(self, element_id: str) -> str:
        return " ".join(self.by_id[element_id]["text"].split())

    def html_lang(self) -> str | None:
        [html] = [e for e in self.elements if e["tag"] == "html"]
        return html["attrs"].get("lang")

    def fields(self, form_id: str) -> dict[str, str | None]:
        return {str(e["attrs"]["name"]): e["attrs"].get("value")
                for e in self.by_id[form_id]["inputs"] if e["attrs"].get("name")}

    def rows(self, table_id: str, key: str) -> list[str]:
        """The `data-<key>` of each row of a table, top to bottom."""
        return [str(e["attrs"][f"data-{key}"]) for e in self.elements
                if e["tag"] == "tr" and table_id in e["within"] and f"data-{key}" in e["attrs"]]

    def with_class(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.elements if name in str(e["attrs"].get("class", "")).split()]

    def forms_posting_to(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.elements
                if e["tag"] == "form" and e["attrs"].get("action") == action]
