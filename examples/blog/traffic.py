"""Drive the blog the way a browser (and then a script of the JSON API) would.

Usage: ``traffic.py BASE_URL`` with ``BLOG_USER`` and ``BLOG_PASSWORD`` set. A
``requests`` session keeps Django's ``csrftoken`` and ``sessionid`` cookies; each form
is posted with the ``csrfmiddlewaretoken`` of the page it came from. Signs in, writes
two posts, reads them (HTML and JSON), asks for a post that is not there (404), posts a
form without its token (403, Django's CSRF check), signs out. Prints each call with its
status; fails on a status other than the one expected.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/
from calls import checked, csrf_of  # noqa: E402

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')



def main(base: str) -> None:
    browser = requests.Session()

    call = checked(lambda method, path, **kw: browser.request(method, base + path, allow_redirects=False,
                                                              timeout=30, **kw))

    call("GET", "/posts/", 302)  # not signed in: to the login form
    form = call("GET", "/accounts/login/?next=/posts/", 200)
    call("POST", "/accounts/login/", 302, data={
        "csrfmiddlewaretoken": csrf_of(form, CSRF), "username": os.environ["BLOG_USER"],
        "password": os.environ["BLOG_PASSWORD"], "next": "/posts/"})
    page = call("GET", "/posts/", 200)
    first = call("POST", "/posts/", 302, data={"csrfmiddlewaretoken": csrf_of(page, CSRF), "title": "Hello, Django",
                                               "body": "First post.\n\nRecorded, then replayed."})
    call("GET", first.headers["Location"], 200)
    page = call("GET", "/posts/", 200)
    second = call("POST", "/posts/", 302, data={"csrfmiddlewaretoken": csrf_of(page, CSRF), "title": "Migrations",
                                                "body": "They ran when the app started."})
    call("GET", second.headers["Location"], 200)
    call("GET", first.headers["Location"], 200)  # the view counter, now 2
    call("GET", "/api/posts/", 200)
    post_id = second.headers["Location"].strip("/").rsplit("/", 1)[1]
    call("GET", f"/api/posts/{post_id}/", 200)
    call("GET", "/api/posts/00000000-0000-4000-8000-000000000000/", 404)
    call("POST", "/posts/", 403, data={"title": "no token"})
    page = call("GET", "/posts/", 200)
    call("POST", "/accounts/logout/", 302, data={"csrfmiddlewaretoken": csrf_of(page, CSRF)})
    call("GET", "/api/posts/", 302)  # signed out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
