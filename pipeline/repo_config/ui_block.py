"""The `ui:` block of `.github/codegenapp.yml` as typed values (parsed and checked in parse.py).

```yaml
ui:
  start: npm run serve          # started in the sandbox after setup, in the background
  url: http://127.0.0.1:8080    # where it listens inside the sandbox
  ready_timeout_seconds: 60     # wait until the url answers
  accessibility: report         # or enforce: critical and serious violations fail the check
  pages:
    - path: /
      expect_text: Welcome
    - path: /login
      steps:
        - fill: {label: Email, value: a@example.com}
        - click: {role: button, name: Sign in}
        - expect_text: Signed in
        - wait_for: {text: Dashboard, timeout_seconds: 20}
```
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_READY_TIMEOUT_SECONDS = 60
MAX_READY_TIMEOUT_SECONDS = 600
DEFAULT_WAIT_SECONDS = 10
MAX_WAIT_SECONDS = 300
MAX_PAGES = 50
MAX_STEPS = 50
ACCESSIBILITY_MODES = ("report", "enforce")
STEP_KINDS = ("fill", "click", "expect_text", "wait_for")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# The ARIA roles Playwright's get_by_role accepts.
ROLES = frozenset((
    "alert", "alertdialog", "application", "article", "banner", "blockquote", "button", "caption", "cell",
    "checkbox", "code", "columnheader", "combobox", "complementary", "contentinfo", "definition", "deletion",
    "dialog", "directory", "document", "emphasis", "feed", "figure", "form", "generic", "grid", "gridcell",
    "group", "heading", "img", "insertion", "link", "list", "listbox", "listitem", "log", "main", "marquee",
    "math", "meter", "menu", "menubar", "menuitem", "menuitemcheckbox", "menuitemradio", "navigation", "none",
    "note", "option", "paragraph", "presentation", "progressbar", "radio", "radiogroup", "region", "row",
    "rowgroup", "rowheader", "scrollbar", "search", "searchbox", "separator", "slider", "spinbutton", "status",
    "strong", "subscript", "superscript", "switch", "tab", "table", "tablist", "tabpanel", "term", "textbox",
    "time", "timer", "toolbar", "tooltip", "tree", "treegrid", "treeitem"))


@dataclass(frozen=True)
class UiStep:
    """One step of a page's flow. `kind` says which fields are set:

    fill: label, value · click: role and name, or text · expect_text: text · wait_for: text, timeout_seconds
    """

    kind: str
    label: str | None = None
    value: str | None = None
    role: str | None = None
    name: str | None = None
    text: str | None = None
    timeout_seconds: float = DEFAULT_WAIT_SECONDS

    def describe(self) -> str:
        """As a person would say it: `click button "Sign in"`."""
        if self.kind == "fill":
            return f'fill "{self.label}"'
        if self.kind == "click":
            return f'click {self.role} "{self.name}"' if self.role else f'click "{self.text}"'
        if self.kind == "wait_for":
            return f'wait for "{self.text}"'
        return f'expect text "{self.text}"'


@dataclass(frozen=True)
class UiPage:
    path: str
    expect_text: str | None = None
    steps: tuple[UiStep, ...] = ()


@dataclass(frozen=True)
class UiConfig:
    start: str
    url: str  # scheme://host:port as seen inside the sandbox, no path
    pages: tuple[UiPage, ...] = (UiPage("/"),)
    ready_timeout_seconds: int = DEFAULT_READY_TIMEOUT_SECONDS
    accessibility: str = "report"

    def page_url(self, page: UiPage) -> str:
        return self.url + page.path
