"""Label keys with meaning to Kuma and zonemesh."""

ORIGIN = "kuma.io/origin"
ZONE = "kuma.io/zone"
MESH = "kuma.io/mesh"
DISPLAY_NAME = "kuma.io/display-name"
ENV = "kuma.io/env"
SERVICE_TAG = "kuma.io/service"
PROTOCOL_TAG = "kuma.io/protocol"

ORIGIN_GLOBAL = "global"
ORIGIN_ZONE = "zone"
