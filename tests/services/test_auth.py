from __future__ import annotations

from cerulean.services.auth import KeyVerifier, check_credentials, generate_key, hash_key


def test_generated_keys_look_like_azure_keys() -> None:
    key = generate_key()
    assert len(key) == 32 and int(key, 16) >= 0
    assert generate_key() != key


def test_hash_is_not_the_key() -> None:
    key = generate_key()
    assert key not in hash_key(key)
    assert hash_key(key) == hash_key(key)


def test_verifier_accepts_either_key_only() -> None:
    verifier = KeyVerifier([hash_key("a" * 32), hash_key("b" * 32)])
    assert verifier.verify("a" * 32) and verifier.verify("b" * 32)
    assert not verifier.verify("c" * 32)
    assert not verifier.verify("")


def test_api_key_wins_over_bearer() -> None:
    verifier = KeyVerifier([hash_key("good")])
    verdict = check_credentials({"api-key": "bad", "authorization": "Bearer good"}, verifier)
    assert not verdict.ok and verdict.api_key_sent


def test_bearer_used_when_no_api_key() -> None:
    verifier = KeyVerifier([hash_key("good")])
    assert check_credentials({"authorization": "Bearer good"}, verifier).ok
    assert not check_credentials({"authorization": "Basic good"}, verifier).ok
    assert not check_credentials({}, verifier).ok
