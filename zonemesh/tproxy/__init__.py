"""Transparent proxying in one network namespace: the redirect rules (`rules`), how they are
applied and removed (`iptables`), and how the data plane's own traffic is told apart
(`identity`). The CLI is `zonemesh.cli.transparent_proxy`."""
