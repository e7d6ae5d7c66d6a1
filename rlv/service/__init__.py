"""The sweep service: Ray Tune trials on a local or remote Ray cluster, the driver's callbacks
that write the store, and the cluster launcher. Needs Ray; the trials it runs need torch."""
