"""Generates fernet_fixtures.json: tokens written by Python's `cryptography` Fernet, the format the
original Python deployment stored its connector secrets in. Run once; the output is committed.

    python3 Tests/TributaryTests/Fixtures/make_fernet_fixtures.py > Tests/TributaryTests/Fixtures/fernet_fixtures.json
"""
import json

from cryptography.fernet import Fernet

key = Fernet.generate_key()
other_key = Fernet.generate_key()
f = Fernet(key)
plaintexts = ["my-api-key-123", "s3cr3t/+=with symbols", "", "ключ-パスワード-🔑", "x" * 100]
print(json.dumps({
    "key": key.decode(),
    "cases": [{"plaintext": p, "token": f.encrypt(p.encode()).decode()} for p in plaintexts],
    "other_key_token": Fernet(other_key).encrypt(b"not for this key").decode(),
}, indent=2, ensure_ascii=False))
