"""Credentials: dataplane, zone and user tokens (issue, verify, revoke) and refusal accounting.

- `tokens`: the token kinds, their claims and JWT encoding (RS256, Kuma's claim names);
- `keys`: signing keys kept as GlobalSecrets, rotatable, by key id;
- `service.TokenService`: issuing and verifying against current keys and revocation lists;
- `proxies.authorize_proxy`: what a dataplane token lets a proxy claim;
- `refusals.Refusals`: every refused credential logged and counted.
"""
