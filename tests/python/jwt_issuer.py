"""An identity provider for the JWT tests: makes key pairs, their JWKS, and
tokens signed with PyJWT (and forged ones), as tests/jwt.rs asks.

    python jwt_issuer.py ISSUER AUDIENCE > out.json

prints {"jwks": ..., "jwks_rotated": ..., "tokens": {case: token}}. The
keys live only in this process: nothing of them is written to disk.
"""

import base64
import hashlib
import hmac
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(public_key, algorithm, kid, alg):
    key = json.loads(algorithm.to_jwk(public_key))
    key.update(kid=kid, use="sig", alg=alg)
    return key


def forged(header: dict, claims: dict, sign) -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + sign(head.encode())


def main():
    issuer, audience = sys.argv[1], sys.argv[2]
    now = int(time.time())
    rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec1 = ec.generate_private_key(ec.SECP256R1())
    ed1 = ed25519.Ed25519PrivateKey.generate()
    keys = [
        jwk(rsa1.public_key(), RSAAlgorithm, "rsa-1", "RS256"),
        jwk(rsa1.public_key(), RSAAlgorithm, "rsa-1-ps", "PS256"),
        jwk(ec1.public_key(), ECAlgorithm, "ec-1", "ES256"),
        jwk(ed1.public_key(), OKPAlgorithm, "ed-1", "EdDSA"),
    ]
    rotated = keys + [jwk(rsa2.public_key(), RSAAlgorithm, "rsa-2", "RS256")]

    def claims(**extra):
        base = {"sub": "alice", "iss": issuer, "aud": audience, "exp": now + 600,
                "iat": now, "roles": ["etl"]}
        base.update(extra)
        return {k: v for k, v in base.items() if v is not None}

    def signed(key, alg, kid, body):
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})

    public_pem = rsa1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs256 = lambda data: b64(hmac.new(public_pem, data, hashlib.sha256).digest())
    tokens = {
        "valid": signed(rsa1, "RS256", "rsa-1", claims()),
        "valid_ps256": signed(rsa1, "PS256", "rsa-1-ps", claims()),
        "alg_not_the_keys": signed(rsa1, "PS256", "rsa-1", claims()),
        "valid_ec": signed(ec1, "ES256", "ec-1", claims(sub="bob", roles=["reports"])),
        "valid_ed": signed(ed1, "EdDSA", "ed-1", claims(sub="carol")),
        "expired": signed(rsa1, "RS256", "rsa-1", claims(exp=now - 3600)),
        "within_leeway": signed(rsa1, "RS256", "rsa-1", claims(exp=now - 5)),
        "not_yet": signed(rsa1, "RS256", "rsa-1", claims(nbf=now + 3600)),
        "wrong_aud": signed(rsa1, "RS256", "rsa-1", claims(aud="someone-else")),
        "wrong_iss": signed(rsa1, "RS256", "rsa-1", claims(iss="https://evil.example")),
        "no_aud": signed(rsa1, "RS256", "rsa-1", claims(aud=None)),
        "no_iss": signed(rsa1, "RS256", "rsa-1", claims(iss=None)),
        "no_exp": signed(rsa1, "RS256", "rsa-1", claims(exp=None)),
        "no_sub": signed(rsa1, "RS256", "rsa-1", claims(sub=None)),
        "fractional_exp": signed(rsa1, "RS256", "rsa-1", claims(exp=now + 600.5)),
        "negative_exp": signed(rsa1, "RS256", "rsa-1", claims(exp=-5)),
        "long_sub": signed(rsa1, "RS256", "rsa-1", claims(sub="x" * 300)),
        "bad_signature": signed(rsa2, "RS256", "rsa-1", claims()),
        "alg_none": forged({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims(), lambda _: ""),
        "hs256_public_key": forged({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), hs256),
        "unknown_kid": signed(rsa1, "RS256", "nobody", claims()),
        "rotated": signed(rsa2, "RS256", "rsa-2", claims(sub="dave")),
        "nested_roles": signed(
            rsa1, "RS256", "rsa-1",
            claims(sub="erin", roles=None, realm_access={"roles": ["reports", "ops", "bad role!"]}),
        ),
    }
    json.dump({"jwks": {"keys": keys}, "jwks_rotated": {"keys": rotated}, "tokens": tokens},
              sys.stdout)


if __name__ == "__main__":
    main()
