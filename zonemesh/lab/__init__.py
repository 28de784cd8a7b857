"""A network lab of Linux network namespaces for tests and the demo (`netns`), the two-zone
mesh built in it with transparently proxied workloads (`mesh`), and the small programs run
inside it: clients calling the mesh by name (`clients`) and the lab's own DNS server
standing in for the host's resolver (`upstream_dns`)."""
