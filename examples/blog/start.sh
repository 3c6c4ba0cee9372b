#!/bin/sh
# What the blog's container entrypoint would do: apply the migrations, then serve
# (Django's own server, one process, threads). PYTHON: the interpreter (default python3).
set -e
here=$(dirname "$0")
py=${PYTHON:-python3}
"$py" "$here/manage.py" migrate --noinput
exec "$py" "$here/manage.py" runserver --noreload "${HOST:-127.0.0.1}:${PORT:-8000}"
