"""The sweep service: Ray Tune trials on a local or remote Ray cluster (launch/), the driver's
recorder and its sinks (the store, the curves, the dashboard, the terminal), and the cluster
launcher. Needs Ray; the trials it runs need torch."""
