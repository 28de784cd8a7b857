#!/usr/bin/env bash
# Issue a dataplane token for every proxy of docker-compose.yml, each from its zone CP, into
# deploy/compose/tokens/<name>.token (mounted read-only at /etc/zonemesh-tokens).
#
# Run once the zone CPs are up:  docker compose up --build -d global zone1-cp zone1-cp-2 zone2-cp
# The request is made inside each CP's container, so it comes from loopback, which the CP
# treats as admin (KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN); nothing else needs a credential.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p tokens
umask 077

issue() {  # zone-cp name type
  docker compose exec -T "$1" python - "$2" "$3" <<'PY' > "tokens/$2.token"
import json, sys, urllib.request
name, kind = sys.argv[1], sys.argv[2]
body = json.dumps({"mesh": "default", "name": name, "type": kind, "validFor": "8760h"})
request = urllib.request.Request(
    "http://127.0.0.1:5681/tokens/dataplane", data=body.encode(),
    headers={"content-type": "application/json"}, method="POST")
sys.stdout.write(urllib.request.urlopen(request, timeout=10).read().decode())
PY
  echo "tokens/$2.token ($3, from $1)"
}

issue zone1-cp ingress-z1 ingress
issue zone1-cp echo-z1-a dataplane
issue zone1-cp echo-z1-b dataplane
issue zone1-cp client-z1 dataplane
issue zone1-cp gateway-z1 dataplane
issue zone2-cp ingress-z2 ingress
issue zone2-cp echo-z2-a dataplane
issue zone2-cp client-z2 dataplane
issue zone2-cp gateway-z2 dataplane
