"""Federation (KDS): a global control plane and the zone control planes that dial it.

- global -> every zone: the types flagged `sync.global_to_zones` (Mesh, MMZS, ...);
- zone -> global: the types flagged `sync.zone_to_global` (read-only copies on global);
- global -> the other zones: each zone's types flagged `sync.zone_to_zones`.

`server.KdsServer` runs on global, `client.KdsClient` on a federated zone; `sync` holds the
snapshot-then-changes engine both use, `mapping` how resources are renamed and relabelled
(and what of the mesh CAs each zone receives). A zone presents its zone token
(`zone_token`); global checks it before anything else (`auth`), which open-source Kuma
does not do at all.
"""
