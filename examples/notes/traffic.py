"""Drive the notes app the way a browser would: a cookie jar, forms with their CSRF tokens.

Usage: ``traffic.py BASE_URL`` with ``NOTES_EMAIL`` and ``NOTES_PASSWORD`` set. Signs in
through the HTML form, adds two notes, reads them and the activity page, tries a note
that is not there (404) and a form post without its CSRF token (400), signs out. Each
call prints its method, path and status; the script fails if a status is not the one
expected.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/
from calls import checked, csrf_of  # noqa: E402

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')



def main(base: str) -> None:
    browser = requests.Session()  # keeps the session cookie, as a browser does

    call = checked(lambda method, path, **kw: browser.request(method, base + path, allow_redirects=False,
                                                              timeout=30, **kw))

    form = call("GET", "/login", 200)
    call("POST", "/login", 302, data={"csrf_token": csrf_of(form, CSRF), "email": os.environ["NOTES_EMAIL"],
                                     "password": os.environ["NOTES_PASSWORD"]})
    page = call("GET", "/notes", 200)
    first = call("POST", "/notes", 302, data={"csrf_token": csrf_of(page, CSRF), "title": "Groceries",
                                              "body": "eggs, milk"})
    call("GET", first.headers["Location"], 200)
    page = call("GET", "/notes", 200)
    second = call("POST", "/notes", 302, data={"csrf_token": csrf_of(page, CSRF), "title": "Ideas",
                                               "body": "record, replay"})
    call("GET", second.headers["Location"], 200)
    call("GET", "/notes", 200)
    call("GET", "/activity", 200)
    call("GET", "/notes/999999", 404)
    call("POST", "/notes", 400, data={"title": "no token"})
    call("POST", "/logout", 302, data={"csrf_token": csrf_of(page, CSRF)})
    call("GET", "/notes", 302)  # signed out: back to the login form


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5000")
