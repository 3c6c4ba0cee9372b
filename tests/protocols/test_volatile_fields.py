"""Values the app generates in HTTP requests and Kafka records (issue 12): found in the
URL, headers and bodies / keys, headers and JSON values, in the order masking meets
them; the user's rules (JSON paths, names, topics, identifiers); JSON compared as data
in any key order, also once masked; binary payloads never searched."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from trproxy.protocols.http import DIALECT as HTTP
from trproxy.protocols.http import dialect_with
from trproxy.protocols.http.config import config_from_section
from trproxy.protocols.kafka import DIALECT as KAFKA
from trproxy.protocols.volatile import MASK, loads_masked, mask, occurrences

NOW = datetime(2026, 12, 3, 1, 0, 0, tzinfo=UTC)
EPOCH = int(NOW.timestamp())
UUID = "0f4a6c3e-2b1d-4e8f-9a7c-5d3b1e2f4a6c"
LIVE = "5b2e9d10-7c4f-4a8e-b1d2-3e4f5a6b7c8d"
NONCE = "9f8e7d6c5b4a39281706"


def http_request(uid: str = UUID, body: dict | None = None, path: str = "/v1/orders") -> dict:
    return {"method": "POST", "url": f"http://127.0.0.1:8080{path}/{uid}?nonce={NONCE}&page=2",
            "http_version": "HTTP/1.1",
            "headers": [["Host", "127.0.0.1:8080"], ["Idempotency-Key", uid],
                        ["Content-Type", "application/json"]],
            "body": {"json": body if body is not None else {"id": uid, "at": EPOCH, "qty": 2}}}


def test_http_values_in_path_query_headers_and_json_body_in_mask_order() -> None:
    request = http_request()
    found = HTTP.volatile(request, NOW)
    assert found == [UUID, NONCE, UUID, UUID, str(EPOCH)]
    assert occurrences(request, set(found)) == found  # as masking meets them: pairs line up
    key = HTTP.match_key(mask(request, found))
    assert key["path"] == f"/v1/orders/{MASK}" and key["query"] == [["nonce", MASK], ["page", "2"]]
    assert key["body"] == {"json": {"id": MASK, "at": MASK, "qty": 2}}


def test_http_a_path_is_never_one_random_word_and_the_host_is_not_searched() -> None:
    request = {"method": "GET", "url": "http://api9x7k2m4.internal:8080/api/v1/getUserProfileById/b7Xk2",
               "headers": [], "body": ""}
    assert HTTP.volatile(request, NOW) == []


def test_http_binary_and_huge_bodies_are_not_searched() -> None:
    binary = {"method": "POST", "url": "http://h/u", "headers": [],
              "body": {"base64": "aGVsbG8gd29ybGQgdGhpcyBpcyBiaW5hcnkgOWYzZTJhMWI="}}
    huge = {"method": "POST", "url": "http://h/u", "headers": [],
            "body": {"json": [{"id": UUID}] * 5000}}
    assert HTTP.volatile(binary, NOW) == [] and HTTP.volatile(huge, NOW) == []


def test_http_form_body_values_are_searched_one_by_one() -> None:
    request = {"method": "POST", "url": "http://h/login", "headers": [
        ["Content-Type", "application/x-www-form-urlencoded"]], "body": f"user=ann&csrf={NONCE}"}
    assert HTTP.volatile(request, NOW) == [NONCE]


def test_http_json_key_order_does_not_matter_even_masked() -> None:
    first = http_request(body={"id": UUID, "at": EPOCH, "qty": 2})
    second = http_request(uid=LIVE, body={"qty": 2, "at": EPOCH + 5, "id": LIVE})
    masked = [HTTP.match_key(mask(r, HTTP.volatile(r, NOW))) for r in (first, second)]
    assert json.dumps(masked[0], sort_keys=True) == json.dumps(masked[1], sort_keys=True)
    third = http_request(uid=LIVE, body={"qty": 3, "at": EPOCH, "id": LIVE})  # a real difference
    assert HTTP.match_key(mask(third, HTTP.volatile(third, NOW))) != masked[0]


def test_http_user_rules_json_paths_headers_query_and_identifiers() -> None:
    dialect = dialect_with(config_from_section({
        "volatile_headers": ["X-Nonce"], "volatile_query": ["n"],
        "volatile_json_paths": ["order.ref", "items[*].code"],
        "volatile_identifiers": ["ord-[0-9]+"]}))
    request = {"method": "POST", "url": "http://h/orders/ord-42?n=1234&page=2",
               "headers": [["X-Nonce", "77"]],
               "body": {"json": {"order": {"ref": 5521, "name": "x"}, "items": [{"code": "ab"}]}}}
    assert dialect.volatile_rules is not None
    assert dialect.volatile_rules(request) == ["ord-42", "1234", "77", "5521", "ab"]
    assert dialect.volatile(request, NOW) == ["ord-42", "1234", "77", "5521", "ab"]
    assert HTTP.volatile(request, NOW) == []  # no rules: nothing there looks generated


@pytest.mark.parametrize(("section", "error"), [
    ({"volatile_headers": "x"}, "http.volatile_headers must be a list of names"),
    ({"volatile_identifiers": ["ord-("]}, "is not a regular expression"),
    ({"volatile_identifiers": ["x*"]}, "matches nothing at all"),
])
def test_http_bad_rules_say_what_is_wrong(section, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        config_from_section(section)


def test_loads_masked_reads_json_whose_numbers_were_masked() -> None:
    text = mask(json.dumps({"at": EPOCH, "id": UUID, "n": [EPOCH]}), [str(EPOCH), UUID])
    assert loads_masked(text) == {"at": MASK, "id": MASK, "n": [MASK]}
    with pytest.raises(ValueError):
        loads_masked("not json")


def produce(records: list[dict], topic: str = "orders") -> dict:
    return {"api": "Produce", "version": 9, "body": {"acks": -1, "topic_data": [{
        "name": topic, "partition_data": [{"index": 0, "records": [{
            "base_offset": 0, "first_timestamp": EPOCH * 1000, "records": records}]}]}]}}


def record(key: str | None, value: object, headers: list | None = None) -> dict:
    return {"timestamp_delta": 0, "offset_delta": 0, "key": key, "value": value,
            "headers": headers or []}


def test_kafka_keys_headers_and_json_values_of_produced_records() -> None:
    value = json.dumps({"id": UUID, "at": EPOCH, "qty": 2})
    request = produce([record(UUID, value, [{"key": "trace", "value": NONCE}])])
    found = KAFKA.volatile(request, NOW)
    assert found == [UUID, UUID, str(EPOCH), NONCE]
    assert occurrences(request, set(found)) == found
    live = produce([record(LIVE, json.dumps({"qty": 2, "id": LIVE, "at": EPOCH + 3}),
                           [{"key": "trace", "value": "0a1b2c3d4e5f60718293"}])])
    keys = [json.dumps(KAFKA.match_key(mask(r, KAFKA.volatile(r, NOW))), sort_keys=True)
            for r in (request, live)]
    assert keys[0] == keys[1]  # another id, time and trace, keys in another order
    other = produce([record(LIVE, json.dumps({"qty": 3, "id": LIVE, "at": EPOCH}))])
    assert json.dumps(KAFKA.match_key(mask(other, KAFKA.volatile(other, NOW))), sort_keys=True) != keys[0]


def test_kafka_json_values_compare_in_any_key_order_and_binary_is_not_searched() -> None:
    first = produce([record("k", '{"a": 1, "b": [1, 2]}')])
    second = produce([record("k", '{"b": [1, 2], "a": 1}')])
    assert json.dumps(KAFKA.match_key(first), sort_keys=True) == json.dumps(KAFKA.match_key(second), sort_keys=True)
    assert KAFKA.volatile(produce([record(None, {"hex": UUID.replace("-", "")})]), NOW) == []
    assert KAFKA.volatile({"api": "Fetch", "body": {"topics": [UUID]}}, NOW) == []


def test_kafka_user_rules_keys_by_topic_headers_json_paths_identifiers() -> None:
    assert KAFKA.configure is not None
    dialect = KAFKA.configure({"volatile_keys": ["orders"], "volatile_headers": ["seq"],
                               "volatile_json_paths": ["ref"], "volatile_identifiers": ["ord-[0-9]+"]})
    request = produce([record("42", '{"ref": 7, "note": "for ord-9"}', [{"key": "seq", "value": "3"}])])
    assert dialect.volatile_rules is not None
    assert dialect.volatile_rules(request) == ["42", "7", "ord-9", "3"]
    assert dialect.volatile_rules(produce([record("42", "x")], topic="audit")) == []
    with pytest.raises(ValueError, match="kafka.volatile_keys must be a list of names"):
        KAFKA.configure({"volatile_keys": {"orders": 1}})
