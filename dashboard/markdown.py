"""Markdown that came from outside (an agent's plan) as HTML a page may show: rendered as GitHub does
(CommonMark with tables and strikethrough, raw HTML allowed), then sanitised with nh3. What survives is
markup only: no script or style, no event handler attributes (`onerror`), no `javascript:` or `data:`
links, no images (the Content-Security-Policy would refuse other hosts' images anyway), and every link
gets rel="nofollow noopener"."""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

_RENDERER = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")

TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "q", "s", "samp",
        "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
        "tr", "tt", "ul", "var"}
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "td": {"colspan", "rowspan"},
              "th": {"colspan", "rowspan", "scope"}, "abbr": {"title"}}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "nofollow noopener"


def render_markdown(text: str | None) -> Markup:
    """`text` as sanitised HTML, safe to put in a page as it is."""
    if not text:
        return Markup("")
    html = _RENDERER.render(text)
    return Markup(nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes=URL_SCHEMES,
                            link_rel=LINK_REL, strip_comments=True))
