"""A small web app for the UI check's tests: plain HTML pages and a standard-library server (the
sandbox has /usr/bin/python3), committed to a real git repository by `open_pull_request`.

`server.py PORT` serves `/name` from `name.html` (and `/` from `index.html`), plus:

* `/server-reach`: the server itself tries to connect to each port in `$HOST_PORTS` on 127.0.0.1 and
  answers one line per port, "server → PORT: reached" or "server → PORT: blocked (...)";
* `/report`: the text of `report.txt`, or HTTP 500 when it is missing (a broken page).
"""

from __future__ import annotations

import textwrap
from typing import Any

PORT = 8080
URL = f"http://127.0.0.1:{PORT}"

SERVER = textwrap.dedent('''\
    import http.server, os, socket, sys, urllib.parse

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/server-reach":
                return self.answer(200, "\\n".join(self.reach(int(p)) for p in os.environ["HOST_PORTS"].split(",")))
            if path == "/report":
                if not os.path.exists("report.txt"):
                    return self.answer(500, "report.txt is missing")
                return self.answer(200, open("report.txt").read())
            if path != "/" and "." not in path.rsplit("/", 1)[-1]:
                self.path = path + ".html"
            return super().do_GET()

        def reach(self, port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return f"server -> {port}: reached"
            except OSError as exc:
                return f"server -> {port}: blocked ({exc.strerror})"

        def answer(self, status, text):
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    ''')


def page(title: str, body: str, script: str = "") -> str:
    """An accessible page (language, title, landmark): axe-core finds nothing in the frame itself."""
    tail = f"<script>\n{script}\n</script>\n" if script else ""
    return (f'<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8"><title>{title}</title></head>\n'
            f"<body>\n<main>\n{body}\n</main>\n{tail}</body>\n</html>\n")


INDEX = page("Widgets", '<h1>Welcome to widgets</h1>\n<p>The widget shop.</p>\n<p><a href="/about">About us</a></p>')
ABOUT = page("About", "<h1>About</h1>\n<p>We make widgets since 1999.</p>")
LOGIN = page("Sign in", '<h1>Sign in</h1>\n<form onsubmit="return signIn()">\n'
                        '<label for="email">Email</label> <input id="email" type="email">\n'
                        '<button type="submit">Sign in</button>\n</form>\n<p id="result" role="status"></p>',
             "function signIn() {\n  document.getElementById('result').textContent =\n"
             "    'Signed in as ' + document.getElementById('email').value;\n  return false;\n}")


def reach_page(ports: list[int]) -> str:
    """Page JavaScript fetching each host port directly, and showing what the server itself could reach."""
    script = (f"const ports = {ports};\n"
              "const out = document.getElementById('out');\n"
              "function say(text) { const li = document.createElement('li'); li.textContent = text; out.append(li); }\n"
              "for (const port of ports) {\n"
              "  fetch(`http://127.0.0.1:${port}/health`).then(() => say(`js -> ${port}: reached`),\n"
              "                                             () => say(`js -> ${port}: blocked`));\n"
              "}\n"
              "fetch('/server-reach').then(r => r.text()).then(t => t.split('\\n').forEach(say));")
    return page("Reach", "<h1>Reach</h1>\n<ul id=\"out\"></ul>", script)


def app_files(**overrides: Any) -> dict[str, Any]:
    files = {"server.py": SERVER, "index.html": INDEX, "about.html": ABOUT, "login.html": LOGIN,
             "report.txt": "all good\n"}
    files.update(overrides)
    return files


def ui_config(pages: str, *, start: str = f"python3 server.py {PORT}", extra: str = "",
              accessibility: str = "report") -> str:
    """A `.github/codegenapp.yml` with a validate step and the UI check of `pages` (YAML, indented 4)."""
    return (f"validate:\n  - test -f server.py\n{extra}ui:\n  start: {start}\n  url: {URL}\n"
            f"  ready_timeout_seconds: 20\n  accessibility: {accessibility}\n  pages:\n{pages}")
