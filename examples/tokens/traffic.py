"""Run ``collection.json`` against the tokens app, the way Postman or newman would.

Usage: ``traffic.py BASE_URL`` with ``TOKENS_USER`` and ``TOKENS_PASSWORD`` set. Each
request's ``{{var}}`` are replaced from the variables (``base``, ``username``,
``password`` and what earlier answers saved: the token, created ids); ``auth`` adds
``Authorization: Bearer {{token}}``. Prints each call with its status; fails on a status
other than ``expect``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import httpx

VAR = re.compile(r"\{\{(\w+)\}\}")


def fill(value, variables: dict[str, str]):
    if isinstance(value, str):
        return VAR.sub(lambda m: variables[m.group(1)], value)
    if isinstance(value, dict):
        return {k: fill(v, variables) for k, v in value.items()}
    return value


def main(base: str) -> None:
    collection = json.loads((Path(__file__).parent / "collection.json").read_text())
    variables = {"base": base, "username": os.environ["TOKENS_USER"], "password": os.environ["TOKENS_PASSWORD"]}
    with httpx.Client(timeout=30) as http:
        for step in collection["item"]:
            headers = {"Authorization": f"Bearer {variables['token']}"} if step.get("auth") else {}
            body = fill(step["body"], variables) if "body" in step else None
            answer = http.request(step["method"], fill(step["url"], variables), json=body, headers=headers)
            print(f"> {step['method']} {answer.request.url.raw_path.decode()}  [{answer.status_code}]  {step['name']}")
            if answer.status_code != step["expect"]:
                sys.exit(f"{step['name']}: expected {step['expect']}, got {answer.status_code}: {answer.text[:300]}")
            for name, field in step.get("save", {}).items():
                variables[name] = str(answer.json()[field])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
